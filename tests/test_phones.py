"""Snom Infobox phones and `deskbot probe`, against SIPp phones on 127.0.0.1.

The Infobox phone (tests/sipp/notify.xml.in) answers only a NOTIFY that
carries Snom's headers and an InfoBoxQueue body; anything else goes
unanswered, so a missing header shows up as 408 here. The XML the phone got
is read back from SIPp's trace and parsed.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import Baresip, SippPhone, free_port, run_deskbot, write_config

EVIL = "</Text><Icon>kIconTypeFkeyDispCode</Icon> & \"quoted\" 'single' ]]> <![CDATA[x]]>"


def config_for(tmp_path: Path, phones: dict[str, tuple[str, str]], extra: str = "") -> Path:
    """phones: extension -> (uri, format); an empty format leaves the fleet default."""
    lines = [
        "[sip]",
        'listen = "127.0.0.1:0"',
        "timeout = 1.0",
        "[audit]",
        f'path = "{tmp_path / "audit.sqlite3"}"',
    ]
    for ext, (uri, fmt) in phones.items():
        lines += [f"[phones.{ext}]", f'uri = "{uri}"', f'label = "Desk {ext}"']
        if fmt:
            lines.append(f'format = "{fmt}"')
    return write_config(tmp_path / "deskbot.toml", "\n".join(lines) + "\n" + extra)


def run_json(command: str, cfg: Path, *args: str):
    result = run_deskbot(command, "-c", str(cfg), "--json", *args)
    return result, [json.loads(line) for line in result.stdout.splitlines()]


def infobox_lines(phone: SippPhone) -> list[str]:
    """The one NOTIFY the phone got -> the text of each Infobox line (the XML must parse)."""
    [notify] = phone.wait_received(1)
    assert int(notify.headers["content-length"]) == len(notify.body)
    root = ET.fromstring(notify.body)
    assert root.tag == "InfoBoxQueue"
    [box] = list(root)
    assert box.tag == "InfoBox"
    assert {el.tag for el in root.iter()} == {"InfoBoxQueue", "InfoBox", "Line", "Text"}
    assert all(not el.attrib for el in root.iter() if el.tag != "Line")
    return [line.findtext("Text") or "" for line in box.findall("Line")]


def test_an_infobox_phone_gets_a_snom_notify_whose_xml_holds_the_text_as_text(sipp, tmp_path):
    phone = sipp(200, method="NOTIFY")
    cfg = config_for(tmp_path, {"486": (phone.uri(), "snom-infobox")})
    result, [row] = run_json("send", cfg, "486", EVIL)
    assert result.returncode == 0, result.stderr
    assert (row["code"], row["reason"], row["outcome"]) == (200, "OK", "delivered")
    [notify] = phone.received()
    assert notify.request_uri == f"sip:486@127.0.0.1:{phone.port}"
    assert notify.headers["event"] == "xml"
    assert notify.headers["subscription-state"].startswith("active;expires=")
    assert notify.headers["content-type"] == "application/snomxml"
    assert infobox_lines(phone) == [EVIL]  # the markup arrived as characters, not elements


def test_each_line_of_the_text_is_a_line_of_the_infobox(sipp, tmp_path):
    phone = sipp(200, method="NOTIFY")
    cfg = config_for(tmp_path, {"486": (phone.uri(), "snom-infobox")})
    result = run_deskbot("send", "-c", str(cfg), "486", "Fire drill 14:00\nleave by the stairs ☕")
    assert result.returncode == 0, result.stderr
    assert infobox_lines(phone) == ["Fire drill 14:00", "leave by the stairs ☕"]


def test_one_send_gives_classic_phones_a_message_and_infobox_phones_a_notify(sipp, tmp_path):
    classic, infobox, old_snom = sipp(200), sipp(200, method="NOTIFY"), sipp(489, method="NOTIFY")
    cfg = config_for(
        tmp_path,
        {
            "486": (classic.uri("486"), "message"),
            "487": (infobox.uri("487"), ""),  # the fleet default below
            "488": (old_snom.uri("488"), ""),
        },
        extra='[message]\nformat = "snom-infobox"\n'
        '[groups.floor]\nmembers = ["486", "487", "488"]\n',
    )
    result, rows = run_json("send", cfg, "@floor", "lunch is here")
    assert result.returncode == 1  # a final non-2xx answer, no timeout
    by_ext = {r["target"]: r for r in rows}
    assert [(e, by_ext[e]["code"], by_ext[e]["reason"]) for e in ("486", "487", "488")] == [
        ("486", 200, "OK"),
        ("487", 200, "OK"),
        ("488", 489, "Bad Event"),
    ]
    assert "firmware too old or XML notify off" in by_ext["488"]["hint"]
    [message] = classic.wait_received(1)
    assert (message.body, message.headers["content-type"]) == (
        b"lunch is here",
        "text/plain;charset=UTF-8",
    )
    assert infobox_lines(infobox) == ["lunch is here"]
    assert infobox_lines(old_snom) == ["lunch is here"]


def test_a_text_that_fits_a_message_but_not_an_infobox_goes_to_no_phone_of_the_group(
    sipp, tmp_path
):
    classic, infobox = sipp(200), sipp(200, method="NOTIFY")
    cfg = config_for(
        tmp_path,
        {"486": (classic.uri("486"), "message"), "487": (infobox.uri("487"), "snom-infobox")},
        extra='[message]\nmax_chars = 1000\n[groups.floor]\nmembers = ["486", "487"]\n',
    )
    text = 'A&B "C" <D> ' * 40  # 480 bytes as it is; & " < > are 4-6 bytes each in XML
    result = run_deskbot("send", "-c", str(cfg), "@floor", text)
    assert result.returncode == 2
    assert "text too long: 1400 bytes on Snom Infobox phones, escaped as XML," in result.stderr
    assert "nothing was sent" in result.stderr
    assert classic.received() == [] and infobox.received() == []
    fits = run_deskbot("send", "-c", str(cfg), "486", text)  # a MESSAGE carries it as it is
    assert fits.returncode == 0, fits.stderr
    assert [m.body for m in classic.wait_received(1)] == [text.strip().encode()]


def test_notify_answers_get_hints_for_what_the_phone_lacks(sipp, tmp_path):
    no_notify, no_snomxml = sipp(501, method="NOTIFY"), sipp(415, method="NOTIFY")
    cfg = config_for(
        tmp_path,
        {"486": (no_notify.uri(), "snom-infobox"), "487": (no_snomxml.uri("487"), "snom-infobox")},
    )
    result = run_deskbot("send", "-c", str(cfg), "486,487", "hi")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("486\tDesk 486\t501 Not Implemented\t")
    assert lines[0].endswith('the phone does not take SIP NOTIFY: set format = "message" for it')
    assert "487\tDesk 487\t415 Unsupported Media Type" in lines[1]
    assert "application/snomxml" in lines[1]


def test_probe_sends_options_and_reports_each_phone_like_send(sipp, tmp_path):
    up, wrong = sipp(200, method="OPTIONS"), sipp(404, method="OPTIONS")
    cfg = config_for(tmp_path, {"486": (up.uri(), ""), "487": (wrong.uri("487"), "")})
    result, rows = run_json("probe", cfg, "486,487")
    assert result.returncode == 1
    assert {"target", "uri", "code", "reason", "elapsed_ms"} <= rows[0].keys()
    assert [(r["target"], r["uri"], r["code"], r["reason"]) for r in rows] == [
        ("486", up.uri(), 200, "OK"),
        ("487", wrong.uri("487"), 404, "Not Found"),
    ]
    assert "the phone has no identity 487" in rows[1]["hint"]
    [options] = up.wait_received(1)
    assert options.request_uri == f"sip:486@127.0.0.1:{up.port}"
    assert options.body == b""
    plain = run_deskbot("probe", "-c", str(cfg), "486")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("486\tDesk 486\t200 OK\t")
    assert not (tmp_path / "audit.sqlite3").exists()  # a probe shows nothing and is not recorded


def test_probe_of_a_phone_that_does_not_answer_is_408_and_exit_3(sipp, tmp_path):
    up = sipp(200, method="OPTIONS")
    nobody = f"sip:488@127.0.0.1:{free_port()}"
    cfg = config_for(tmp_path, {"486": (up.uri(), ""), "488": (nobody, "snom-infobox")})
    result, rows = run_json("probe", cfg, "486,488")
    assert result.returncode == 3
    assert [(r["target"], r["code"]) for r in rows] == [("486", 200), ("488", 408)]
    assert "no answer" in rows[1]["hint"]


def test_a_challenged_probe_says_deskbot_answers_challenges_only_for_text(sipp, tmp_path):
    challenging = sipp(407, method="OPTIONS")
    cfg = config_for(tmp_path, {"486": (challenging.uri(), "")})
    result, [row] = run_json("probe", cfg, "486")
    assert result.returncode == 1
    assert (row["code"], row["reason"]) == (407, "Proxy Authentication Required")
    assert "deskbot answers such challenges only for text messages" in row["hint"]


def test_probe_of_an_unknown_target_sends_nothing_and_exits_2(sipp, tmp_path):
    up = sipp(200, method="OPTIONS")
    cfg = config_for(tmp_path, {"486": (up.uri(), "")})
    result = run_deskbot("probe", "-c", str(cfg), "999")
    assert result.returncode == 2
    assert "extension 999 is not in the directory" in result.stderr
    assert run_deskbot("probe", "-c", str(cfg)).returncode == 2  # usage
    assert up.received() == []


def test_a_phone_that_is_no_snom_refuses_the_notify_and_probe_still_finds_its_identity(
    baresip: Baresip, tmp_path
):
    cfg = config_for(
        tmp_path,
        {"486": (baresip.uri("486"), "snom-infobox"), "487": (baresip.uri("487"), "")},
    )
    sent, [row] = run_json("send", cfg, "486", "hello")
    assert sent.returncode == 1
    assert (row["code"], row["reason"]) == (481, "Subscription Does Not Exist")
    assert row["hint"].endswith('no Snom phone with Infobox: set format = "message" for it')
    probed, rows = run_json("probe", cfg, "486,487")
    assert probed.returncode == 1
    assert [(r["target"], r["code"]) for r in rows] == [("486", 200), ("487", 404)]
