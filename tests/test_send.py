"""`deskbot send` against real SIP peers (SIPp, baresip) on 127.0.0.1.

Each test runs the installed command as a user would and asserts what the
user sees (lines, JSON, exit code) and what the phone received.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import Baresip, SippPhone, run_deskbot, write_config


def config_for(
    tmp_path: Path,
    phones: dict[str, str],
    extra: str = "",
    timeout: float = 1.0,
    transport: str = "udp",
) -> Path:
    lines = [
        "[sip]",
        'listen = "127.0.0.1:0"',
        f'transport = "{transport}"',
        'from_uri = "sip:deskbot@127.0.0.1"',
        f"timeout = {timeout}",
        "[audit]",
        f'path = "{tmp_path / "audit.sqlite3"}"',
    ]
    for ext, uri in phones.items():
        lines += [f"[phones.{ext}]", f'uri = "{uri}"', f'label = "Desk {ext}"']
    return write_config(tmp_path / "deskbot.toml", "\n".join(lines) + "\n" + extra)


def send_json(cfg: Path, *args: str, env: dict[str, str] | None = None):
    result = run_deskbot("send", "-c", str(cfg), "--json", *args, env=env)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return result, rows


def test_200_phone_shows_the_text_and_exit_is_0(sipp, tmp_path):
    phone: SippPhone = sipp(200)
    cfg = config_for(tmp_path, {"486": phone.uri("486")})
    result = run_deskbot("send", "-c", str(cfg), "486", "meeting", "moved")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("486\tDesk 486\t200 OK\t")
    [msg] = phone.wait_received(1)
    assert msg.body == b"meeting moved"
    assert msg.headers["content-type"] == "text/plain;charset=UTF-8"
    assert msg.request_uri == f"sip:486@127.0.0.1:{phone.port}"
    assert "meeting" not in result.stderr  # bodies never in the log at default level


def test_utf8_and_emoji_arrive_intact_with_a_byte_content_length(sipp, tmp_path):
    phone = sipp(200)
    cfg = config_for(tmp_path, {"486": phone.uri()})
    result, [row] = send_json(cfg, "486", "Grüße ☕ 🎉")
    assert result.returncode == 0 and row["code"] == 200
    [msg] = phone.wait_received(1)
    assert msg.body == "Grüße ☕ 🎉".encode()
    assert int(msg.headers["content-length"]) == len("Grüße ☕ 🎉".encode())


def test_json_lines_carry_the_contract_fields(sipp, tmp_path):
    phone = sipp(200)
    cfg = config_for(tmp_path, {"486": phone.uri()})
    _result, [row] = send_json(cfg, "486", "hello")
    assert {"target", "uri", "code", "reason", "elapsed_ms"} <= row.keys()
    assert (row["target"], row["uri"], row["code"], row["reason"]) == (
        "486",
        phone.uri(),
        200,
        "OK",
    )
    assert 0 < row["elapsed_ms"] < 30_000  # measured and plausible; its speed is bench/'s


def test_404_is_reported_with_a_hint_and_exit_1(sipp, tmp_path):
    phone = sipp(404)
    cfg = config_for(tmp_path, {"487": phone.uri("487")})
    result = run_deskbot("send", "-c", str(cfg), "487", "hi")
    assert result.returncode == 1
    assert "404 Not Found" in result.stdout
    assert "the phone has no identity 487" in result.stdout


def test_busy_and_unavailable_phones_are_refusals(sipp, tmp_path):
    busy, down = sipp(486), sipp(503)
    cfg = config_for(tmp_path, {"486": busy.uri(), "487": down.uri("487")})
    result, rows = send_json(cfg, "486,487", "hi")
    assert result.returncode == 1
    assert [(r["target"], r["code"], r["reason"]) for r in rows] == [
        ("486", 486, "Busy Here"),
        ("487", 503, "Service Unavailable"),
    ]
    assert "busy" in rows[0]["hint"] and "overloaded" in rows[1]["hint"]


def test_silent_phone_is_408_after_the_configured_timeout_and_exit_3(sipp, tmp_path):
    phone = sipp(silent=True)
    cfg = config_for(tmp_path, {"486": phone.uri()}, timeout=1.0)
    result, [row] = send_json(cfg, "486", "anyone there?")
    assert result.returncode == 3
    assert row["code"] == 408
    assert 900 <= row["elapsed_ms"] < 16_000  # the configured 1 s, not pjsip's 32 s
    assert "Filter Packets from Registrar" in row["hint"]
    assert phone.received()  # it did reach the phone: the phone stayed silent


def test_closed_tcp_port_is_no_answer_at_once(tmp_path):
    from conftest import free_port

    port = free_port()
    cfg = config_for(
        tmp_path, {"486": f"sip:486@127.0.0.1:{port};transport=tcp"}, transport="tcp", timeout=5.0
    )
    result, [row] = send_json(cfg, "486", "hi")
    assert result.returncode == 3
    assert row["code"] == 503 and row["outcome"] == "no-answer"
    assert row["elapsed_ms"] < 5000  # a refused connection, before the configured 5 s
    assert "no connection to the phone" in row["hint"]


def test_a_probe_and_an_infobox_to_a_closed_tcp_port_are_no_connection_too(tmp_path):
    """NOTIFY and OPTIONS take pjsua's other path (sendRequest): the same answer."""
    from conftest import free_port

    uri = f"sip:486@127.0.0.1:{free_port()};transport=tcp"
    cfg = config_for(tmp_path, {"486": uri}, transport="tcp", timeout=5.0)
    cfg.write_text(cfg.read_text() + 'format = "snom-infobox"\n')
    for command in (
        ["probe", "-c", str(cfg), "--json", "486"],
        ["send", "-c", str(cfg), "--json", "486", "hi"],
    ):
        result = run_deskbot(*command)
        [row] = [json.loads(line) for line in result.stdout.splitlines()]
        assert result.returncode == 3, result.stderr
        assert row["code"] == 503 and row["outcome"] == "no-answer"
        assert "no connection to the phone" in row["hint"]


def test_no_answer_wins_over_refusal_in_the_exit_code(sipp, tmp_path):
    ok, missing, silent = sipp(200), sipp(404), sipp(silent=True)
    cfg = config_for(
        tmp_path,
        {"486": ok.uri(), "487": missing.uri("487"), "488": silent.uri("488")},
        extra='[groups.floor]\nmembers = ["486", "487", "488"]\n',
    )
    result, rows = send_json(cfg, "@floor", "fire drill")
    assert result.returncode == 3
    assert {r["target"]: r["code"] for r in rows} == {"486": 200, "487": 404, "488": 408}


def test_tcp_transport_delivers(sipp, tmp_path):
    phone = sipp(200, transport="tcp")
    cfg = config_for(tmp_path, {"486": phone.uri()}, transport="tcp")
    result, [row] = send_json(cfg, "486", "over tcp")
    assert result.returncode == 0 and row["code"] == 200
    assert phone.wait_received(1)[0].body == b"over tcp"


def test_nothing_sent_is_exit_2(sipp, tmp_path):
    phone = sipp(200)
    cfg = config_for(tmp_path, {"486": phone.uri()})
    unknown = run_deskbot("send", "-c", str(cfg), "999", "hi")
    assert unknown.returncode == 2
    assert "extension 999 is not in the directory" in unknown.stderr
    too_long = run_deskbot("send", "-c", str(cfg), "486", "x" * 161)
    assert too_long.returncode == 2
    assert "text too long: 161 characters, the limit is 160" in too_long.stderr
    bad = write_config(tmp_path / "bad.toml", "[sip]\nlisten = 1\n")
    assert run_deskbot("send", "-c", str(bad), "486", "hi").returncode == 2
    assert run_deskbot("send", "-c", str(cfg), "486").returncode == 2  # usage
    assert phone.received() == []


def test_chat_text_cannot_reach_a_header_or_the_uri(sipp, tmp_path):
    phone = sipp(200)
    cfg = config_for(tmp_path, {"486": phone.uri()})
    evil = "hi\r\nX-Injected: 1\r\n\r\nMESSAGE sip:1@evil SIP/2.0"
    _result, [row] = send_json(cfg, "486", evil)
    assert row["code"] == 200
    [msg] = phone.wait_received(1)
    assert "x-injected" not in msg.headers
    assert msg.request_uri == f"sip:486@127.0.0.1:{phone.port}"
    assert msg.body == b"hi\nX-Injected: 1\n\nMESSAGE sip:1@evil SIP/2.0"
    injected = run_deskbot("send", "-c", str(cfg), "486?X-Injected=1", "hi")
    assert injected.returncode == 2


def test_baresip_answers_200_for_its_identity_and_404_for_another(baresip: Baresip, tmp_path):
    cfg = config_for(tmp_path, {"486": baresip.uri("486"), "487": baresip.uri("487")})
    result, rows = send_json(cfg, "486,487", "hello desk")
    assert [(r["target"], r["code"]) for r in rows] == [("486", 200), ("487", 404)]
    assert result.returncode == 1


def test_baresip_over_tcp(baresip: Baresip, tmp_path):
    cfg = config_for(tmp_path, {"486": baresip.uri("486", transport="tcp")}, transport="tcp")
    result, [row] = send_json(cfg, "486", "tcp hello")
    assert (result.returncode, row["code"]) == (0, 200)


def pbx_config(tmp_path: Path, pbx: SippPhone) -> Path:
    extra = (
        f'[sip.registrar]\nuri = "sip:127.0.0.1:{pbx.port}"\nusername = "deskbot"\n'
        f'password_env = "DESKBOT_SIP_PASSWORD"\ndomain = "127.0.0.1:{pbx.port}"\n'
    )
    return config_for(
        tmp_path,
        {},
        extra=extra.replace(f'domain = "127.0.0.1:{pbx.port}"', 'domain = "pbx.test"')
        + f'proxy = "sip:127.0.0.1:{pbx.port};lr"\n',
    )


def test_pbx_with_digest_auth_delivers_with_the_right_password(sipp, tmp_path):
    pbx = sipp(pbx_password="s3cret")
    cfg = pbx_config(tmp_path, pbx)
    result, [row] = send_json(cfg, "4711", "via pbx", env={"DESKBOT_SIP_PASSWORD": "s3cret"})
    assert (result.returncode, row["code"], row["uri"]) == (0, 200, "sip:4711@pbx.test")
    messages = pbx.wait_received(2)
    assert messages[-1].request_uri == "sip:4711@pbx.test"
    assert messages[-1].headers["authorization"].startswith("Digest ")
    assert "s3cret" not in result.stderr


def test_pbx_with_a_wrong_password_is_reported(sipp, tmp_path):
    pbx = sipp(pbx_password="s3cret")
    cfg = pbx_config(tmp_path, pbx)
    result, [row] = send_json(cfg, "4711", "via pbx", env={"DESKBOT_SIP_PASSWORD": "wrong"})
    assert result.returncode == 1
    assert row["code"] == 403
    assert "refuses messages from deskbot" in row["hint"]


def test_check_config_summary_and_problems(tmp_path):
    cfg = config_for(tmp_path, {"486": "sip:486@10.0.0.86"})
    ok = run_deskbot("check-config", "-c", str(cfg))
    assert ok.returncode == 0
    assert ok.stdout.startswith(f"{cfg}: ok: 1 phone, 0 people, 0 groups")
    bad = write_config(
        tmp_path / "bad.toml",
        '[phones.486]\nuri = "sip:486@10.0.0.86"\n'
        '[people.alice]\nphone = "999"\n[sip]\nlistn = "x"\n',
    )
    result = run_deskbot("check-config", "-c", str(bad))
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        f"{bad}: sip.listn: unknown key (check the spelling against config.example.toml)"
    ]


def test_send_needs_no_chat_tokens(sipp, tmp_path):
    phone = sipp(200)
    extra = '[matrix]\nhomeserver = "http://127.0.0.1:9"\nuser_id = "@bot:example.com"\n'
    cfg = config_for(tmp_path, {"486": phone.uri()}, extra=extra)
    assert run_deskbot("send", "-c", str(cfg), "486", "hi").returncode == 0
    check = run_deskbot("check-config", "-c", str(cfg))
    assert check.returncode == 2
    assert "matrix.access_token_env: environment variable DESKBOT_MATRIX_TOKEN" in check.stdout


def test_config_flag_works_before_the_command_too(tmp_path):
    cfg = config_for(tmp_path, {"486": "sip:486@10.0.0.86"})
    result = run_deskbot("-c", str(cfg), "check-config")
    assert result.returncode == 0 and result.stdout.startswith(f"{cfg}: ok: 1 phone,")
    usage = run_deskbot("send")
    assert usage.returncode == 2 and "usage: deskbot send" in usage.stderr


def test_config_is_found_through_deskbot_config_then_the_working_directory(tmp_path):
    cfg = config_for(tmp_path, {"486": "sip:486@10.0.0.86"})
    by_env = run_deskbot("check-config", env={"DESKBOT_CONFIG": str(cfg)})
    assert by_env.returncode == 0 and by_env.stdout.startswith(f"{cfg}: ok")
    (tmp_path / "config.toml").write_text(cfg.read_text())
    deskbot = str(Path(sys.executable).parent / "deskbot")
    in_cwd = subprocess.run(
        [deskbot, "check-config"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert in_cwd.returncode == 0 and in_cwd.stdout.startswith("config.toml: ok")


def test_send_uses_a_free_port_when_the_configured_one_is_taken(sipp, tmp_path):
    phone = sipp(200)
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))  # as `deskbot run` would hold it
    port = busy.getsockname()[1]
    try:
        cfg = config_for(tmp_path, {"486": phone.uri()})
        cfg.write_text(
            cfg.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
        )
        result, [row] = send_json(cfg, "486", "hi")
        assert (result.returncode, row["code"]) == (0, 200)
        assert result.stderr == ""  # the documented fallback is no error
        verbose, [row] = send_json(cfg, "-v", "486", "hi")
        assert (verbose.returncode, row["code"]) == (0, 200)
        logged = verbose.stderr.splitlines()
        assert [line.split(" ", 2)[2] for line in logged if "in use" in line] == [
            f"INFO deskbot: SIP port {port} is in use (deskbot run?): sending from a free port"
        ]
        assert not [line for line in logged if " ERROR " in line or " WARNING " in line]
    finally:
        busy.close()


def test_check_config_counts_in_words_and_a_listen_without_port_means_5060(tmp_path):
    cfg = config_for(
        tmp_path,
        {"486": "sip:486@10.0.0.86", "487": "sip:487@10.0.0.87"},
        extra='[people.alice]\nphone = "486"\n[groups.all]\nmembers = ["486"]\n',
    )
    cfg.write_text(cfg.read_text().replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1"'))
    result = run_deskbot("check-config", "-c", str(cfg))
    assert result.returncode == 0
    assert result.stdout == (
        f"{cfg}: ok: 2 phones, 1 person, 1 group; SIP udp 127.0.0.1:5060; chat: none\n"
    )


def test_the_shell_sender_in_the_audit_log_is_the_login_name_without_user(sipp, tmp_path):
    phone = sipp(200)
    cfg = config_for(tmp_path, {"486": phone.uri()})
    env = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME")}
    deskbot = str(Path(sys.executable).parent / "deskbot")
    result = subprocess.run(
        [deskbot, "send", "-c", str(cfg), "486", "hi"], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0
    db = sqlite3.connect(tmp_path / "audit.sqlite3")
    login = pwd.getpwuid(os.getuid()).pw_name
    assert db.execute("SELECT chat, sender_id FROM commands").fetchall() == [("shell", login)]


def test_targets_with_a_space_inside_one_argument_are_a_usage_error(sipp, tmp_path):
    phone = sipp(200)
    cfg = config_for(tmp_path, {"486": phone.uri(), "487": phone.uri("487")})
    result = run_deskbot("send", "-c", str(cfg), "486 487", "hello")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "deskbot: TARGETS is one word, but '486 487' has a space in it: separate targets "
        "with commas, like 486,487. Nothing was sent.\n"
    )
    empty = run_deskbot("send", "-c", str(cfg), "", "hello")
    assert empty.returncode == 2 and "TARGETS is empty" in empty.stderr
    assert phone.received() == []


def test_relative_audit_path_is_beside_the_config_whatever_the_working_directory(sipp, tmp_path):
    phone = sipp(200)
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    cfg = config_for(etc, {"486": phone.uri()})
    cfg.write_text(cfg.read_text().replace(str(etc / "audit.sqlite3"), "data/audit.sqlite3"))
    deskbot = str(Path(sys.executable).parent / "deskbot")
    for cwd in (etc, elsewhere):
        result = subprocess.run(
            [deskbot, "send", "-c", str(cfg), "486", "hi"], cwd=cwd, capture_output=True
        )
        assert result.returncode == 0, result.stderr
    db = sqlite3.connect(etc / "data" / "audit.sqlite3")
    assert db.execute("SELECT count(*) FROM commands").fetchone() == (2,)
    assert not (elsewhere / "data").exists()


def test_send_to_a_group_at_the_end_of_a_chain_of_1200_groups(sipp, tmp_path):
    phone = sipp(200)
    groups = "".join(f'[groups.g{i}]\nmembers = ["@g{i + 1}"]\n' for i in range(1199))
    groups += '[groups.g1199]\nmembers = ["486"]\n'
    cfg = config_for(tmp_path, {"486": phone.uri()}, extra=groups)
    result, [row] = send_json(cfg, "@g0", "down the chain")
    assert (result.returncode, row["target"], row["code"]) == (0, "486", 200), result.stderr
