"""Poly and Cisco phones by HTTP push, against the fake phones of tests/http_phones.py.

The fake Poly phone insists on Digest, ``/push``, Poly's content type and a
PolycomIPPhone Data body under 1 KB; the fake Cisco phone on Basic, the
``XML=`` form field, and a ``CiscoIPPhoneText`` it fetches from deskbot's
``[desk]`` endpoint. ``deskbot send`` runs exactly as a user runs it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import free_port, run_deskbot, write_config
from test_phones import EVIL

PUSH_ENV = {"DESKBOT_PUSH_PASSWORD": "push-secret"}


def config(tmp_path: Path, phones: dict[str, tuple[str, str, str]], extra: str = "") -> Path:
    """phones: extension -> (format, http address, sip uri)."""
    desk_port = free_port(1)  # SOCK_STREAM
    lines = [
        "[sip]",
        'listen = "127.0.0.1:0"',
        "timeout = 1.0",
        "[audit]",
        f'path = "{tmp_path / "audit.sqlite3"}"',
        "[push]",
        'username = "deskbot"',
        'password_env = "DESKBOT_PUSH_PASSWORD"',
        "[desk]",
        f'listen = "127.0.0.1:{desk_port}"',
        f'url = "http://127.0.0.1:{desk_port}"',
    ]
    for ext, (fmt, http, uri) in phones.items():
        lines += [f"[phones.{ext}]", f'uri = "{uri or f"sip:{ext}@127.0.0.1:9"}"']
        lines += [f'label = "Desk {ext}"', f'format = "{fmt}"']
        if http:
            lines.append(f'http = "{http}"')
    return write_config(tmp_path / "deskbot.toml", "\n".join(lines) + "\n" + extra)


def send(cfg: Path, *args: str, env: dict[str, str] | None = None):
    result = run_deskbot("send", "-c", str(cfg), "--json", *args, env={**PUSH_ENV, **(env or {})})
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return result, {r["target"]: r for r in rows}


def test_a_poly_phone_gets_a_digest_push_whose_data_holds_the_text_as_text(http_phones, tmp_path):
    cfg = config(tmp_path, {"486": ("poly-push", http_phones.url("486"), "")})
    result, rows = send(cfg, "486", EVIL + "\nsecond line")
    assert result.returncode == 0, result.stderr
    assert (rows["486"]["code"], rows["486"]["reason"]) == (200, "OK")
    [shown] = http_phones.shown
    assert (shown.extension, shown.title, shown.lines) == ("486", "deskbot", [EVIL, "second line"])
    assert http_phones.refused == []


def test_a_wrong_push_password_is_a_401_that_names_the_phone_setting(http_phones, tmp_path):
    cfg = config(tmp_path, {"486": ("poly-push", http_phones.url("486"), "")})
    result, rows = send(cfg, "486", "hi", env={"DESKBOT_PUSH_PASSWORD": "wrong"})
    assert result.returncode == 1
    assert (rows["486"]["code"], rows["486"]["outcome"]) == (401, "refused")
    assert "apps.push.username" in rows["486"]["hint"]
    assert http_phones.shown == [] and http_phones.refused == [("486", "wrong digest")]


def test_a_cisco_phone_fetches_its_screen_from_the_desk_endpoint(http_phones, tmp_path):
    cfg = config(tmp_path, {"601": ("cisco-xml", http_phones.url("601"), "")})
    result, rows = send(cfg, "601", "Fire drill ☕ 14:00\nleave by the stairs & <run>")
    assert result.returncode == 0, result.stderr
    assert rows["601"]["code"] == 200
    [shown] = http_phones.shown
    assert shown.lines == ["Fire drill ? 14:00", "leave by the stairs & <run>"]
    assert rows["601"]["reason"] == "OK, 1 character shown as ?, screen fetched"
    assert shown.raw.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    assert b"\r\n" in shown.raw  # Cisco's lines are CR/LF
    [url] = http_phones.fetched
    assert len(url.rsplit("/", 1)[1]) >= 22  # 128 random bits


def test_a_cisco_error_object_is_a_failure_with_its_meaning(http_phones, tmp_path):
    cfg = config(tmp_path, {"601": ("cisco-xml", http_phones.url("601"), "")})
    result, rows = send(cfg, "601", "hi", env={"DESKBOT_PUSH_PASSWORD": "wrong"})
    assert result.returncode == 1
    row = rows["601"]
    assert (row["code"], row["reason"], row["outcome"]) == (
        200,
        "CiscoIPPhoneError 4 (authentication)",
        "refused",
    )
    assert "authenticationURL" in row["hint"]
    assert http_phones.fetched == []


def test_a_phone_that_never_answers_is_408_after_the_timeout(http_phones, tmp_path):
    http_phones.behave["486"] = "silent"
    cfg = config(tmp_path, {"486": ("poly-push", http_phones.url("486"), "")})
    started = time.monotonic()
    result, rows = send(cfg, "486", "hi")
    assert result.returncode == 3
    assert (rows["486"]["code"], rows["486"]["outcome"]) == (408, "no-answer")
    assert time.monotonic() - started < 30  # the 1 s timeout, not the phone's minutes
    assert "no answer in time" in rows["486"]["hint"]


@pytest.mark.parametrize(
    ("fmt", "how", "code", "exit_code"),
    [
        ("poly-push", "huge", 200, 0),  # Poly: the code is the answer, the body is not read
        ("poly-push", "slow", 200, 0),
        ("cisco-xml", "huge", 200, 0),  # Cisco: 16 KB read, no error object in it
        ("cisco-xml", "slow", 408, 3),  # Cisco: the body is the answer, it never ends in time
        ("poly-push", "html500", 500, 1),
        ("cisco-xml", "html500", 500, 1),
        ("poly-push", "redirect", 302, 1),
        ("cisco-xml", "teapot", 418, 1),
    ],
)
def test_hostile_answers_are_bounded_and_reported(http_phones, tmp_path, fmt, how, code, exit_code):
    http_phones.behave["486"] = how
    cfg = config(tmp_path, {"486": (fmt, http_phones.url("486"), "")})
    started = time.monotonic()
    result, rows = send(cfg, "486", "hi")
    assert result.returncode == exit_code, result.stderr
    assert rows["486"]["code"] == code
    assert rows["486"]["reason"].isprintable() and len(rows["486"]["reason"]) <= 120
    assert time.monotonic() - started < 30  # a trickle is cut, not read for minutes
    assert "Traceback" not in result.stderr


def test_https_with_a_self_signed_certificate_is_refused_unless_its_ca_is_configured(tmp_path):
    import trustme
    from http_phones import HttpPhones

    ca = trustme.CA()
    server_ctx = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    phones = HttpPhones(ssl_context=server_ctx).start()
    try:
        cfg = config(tmp_path, {"486": ("poly-push", phones.url("486"), "")})
        result, rows = send(cfg, "486", "hi")
        assert result.returncode == 3
        assert rows["486"]["code"] == 495 and "certificate" in rows["486"]["reason"]
        assert "[push] ca_file" in rows["486"]["hint"]
        assert phones.requests == 0
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        text = cfg.read_text().replace("[push]\n", f'[push]\nca_file = "{ca_file}"\n')
        cfg.write_text(text)
        result, rows = send(cfg, "486", "hi")
        assert result.returncode == 0, result.stderr
        assert [s.lines for s in phones.shown] == [["hi"]]
    finally:
        phones.stop()


def test_every_format_in_one_send_each_gets_its_own(http_phones, sipp, tmp_path):
    from test_phones import infobox_lines
    from test_screens import screen_of

    classic, box = sipp(200), sipp(200, method="NOTIFY")
    snom, yealink = sipp(200, screen="snom-xml"), sipp(200, screen="yealink-xml")
    cfg = config(
        tmp_path,
        {
            "486": ("message", "", classic.uri("486")),
            "487": ("snom-infobox", "", box.uri("487")),
            "488": ("snom-xml", "", snom.uri("488")),
            "489": ("yealink-xml", "", yealink.uri("489")),
            "490": ("poly-push", http_phones.url("490"), ""),
            "491": ("cisco-xml", http_phones.url("491"), ""),
        },
        extra='[groups.floor]\nmembers = ["486", "487", "488", "489", "490", "491"]\n',
    )
    result, rows = send(cfg, "@floor", "lunch is here")
    assert result.returncode == 0, result.stderr
    assert {ext: r["code"] for ext, r in rows.items()} == {
        ext: 200 for ext in ("486", "487", "488", "489", "490", "491")
    }
    assert classic.wait_received(1)[0].body == b"lunch is here"
    assert infobox_lines(box) == ["lunch is here"]
    assert screen_of(snom, "snom-xml")[1] == ["lunch is here"]
    assert screen_of(yealink, "yealink-xml")[1] == ["lunch is here"]
    assert sorted((s.extension, s.maker, s.lines[0]) for s in http_phones.shown) == [
        ("490", "poly", "lunch is here"),
        ("491", "cisco", "lunch is here"),
    ]


def test_a_mixed_send_reports_each_phone_with_its_own_answer(http_phones, sipp, tmp_path):
    """SIP phones go out in one batch and HTTP phones beside it: each line still carries the
    answer of its own phone, whatever order the answers come back in."""
    busy, yealink = sipp(486), sipp(200, screen="yealink-xml")
    http_phones.behave["489"] = "teapot"
    cfg = config(
        tmp_path,
        {
            "486": ("message", "", busy.uri("486")),
            "487": ("poly-push", http_phones.url("487"), ""),
            "488": ("yealink-xml", "", yealink.uri("488")),
            "489": ("poly-push", http_phones.url("489"), ""),
            "490": ("message", "", ""),  # nobody listens at :9
        },
        extra='[groups.floor]\nmembers = ["486", "487", "488", "489", "490"]\n',
    )
    result, rows = send(cfg, "@floor", "lunch is here")
    assert result.returncode == 3, result.stderr  # no answer from 490 wins over 486's refusal
    assert {ext: (r["code"], r["outcome"]) for ext, r in rows.items()} == {
        "486": (486, "refused"),
        "487": (200, "delivered"),
        "488": (200, "delivered"),
        "489": (418, "refused"),
        "490": (408, "no-answer"),
    }
    assert [s.extension for s in http_phones.shown] == ["487"]
    assert busy.wait_received(1)[0].body == b"lunch is here"
    with sqlite3.connect(tmp_path / "audit.sqlite3") as db:  # each answer under its own phone
        audit = db.execute("SELECT extension, code FROM deliveries ORDER BY extension").fetchall()
    assert audit == [("486", 486), ("487", 200), ("488", 200), ("489", 418), ("490", 408)]


def test_a_text_too_long_for_a_poly_push_goes_to_no_phone(http_phones, tmp_path, sipp):
    classic = sipp(200)
    cfg = config(
        tmp_path,
        {
            "486": ("message", "", classic.uri("486")),
            "490": ("poly-push", http_phones.url("490"), ""),
        },
        extra='[message]\nmax_chars = 1000\n[groups.floor]\nmembers = ["486", "490"]\n',
    )
    result, _ = send(cfg, "@floor", "x" * 1000)
    assert result.returncode == 2
    assert "on Poly phones, escaped as XML, where a Poly screen takes 1024" in result.stderr
    assert http_phones.requests == 0 and classic.received() == []


def test_check_config_names_the_missing_push_and_desk_tables(tmp_path):
    cfg = write_config(
        tmp_path / "deskbot.toml",
        """\
        [phones.486]
        uri = "sip:486@10.0.0.86"
        format = "poly-push"
        [phones.601]
        uri = "sip:601@10.0.0.61"
        format = "cisco-xml"
        [phones.602]
        uri = "sip:602@10.0.0.62"
        http = "http://10.0.0.62"
        """,
    )
    result = run_deskbot("check-config", "-c", str(cfg))
    assert result.returncode == 2
    problems = result.stdout + result.stderr
    assert "phones.486.format: poly-push pushes over HTTP with the [push] account" in problems
    assert (
        "phones.601.format: cisco-xml phones fetch their screen from deskbot: add [desk] url"
        in problems
    )
    assert "phones.602.http: is used by poly-push and cisco-xml only" in problems


async def test_a_sip_agent_alone_never_sends_an_http_phone_a_message_instead():
    """deskbot run started without [push], a reload added a Poly phone: refused, not MESSAGEd."""
    from deskbot.directory.snapshot import Phone
    from deskbot.senders.sip.agent import SipAgent
    from deskbot.settings.schema import Sip

    agent = SipAgent(Sip())  # not started: nothing may reach the worker
    delivery = await agent.send(Phone("486", "sip:486@127.0.0.1:9", format="poly-push"), "hi")
    assert (delivery.code, delivery.outcome) == (503, "no-answer")
    assert "restart" not in delivery.reason and "[push]" in delivery.reason
