"""Careless set-ups a new user makes: readable files, secrets in the wrong key, hostile labels,
a stray failpoint variable. The installed `deskbot` as a user runs it, SIPp phones."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DeskbotRun, free_port, one_phone_config, run_deskbot, wait_for, write_config

from deskbot.directory.snapshot import Directory, Person, Phone

DESKBOT = str(Path(sys.executable).parent / "deskbot")
TOKEN = "careless-" + "c" * 24


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most hosts have: files 0644, folders 0755
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_audit_log_its_wal_and_shm_and_its_folder_are_private(tmp_path, sipp, usual_umask):
    phone = sipp(200)
    folder = tmp_path / "data"
    config = one_phone_config(
        tmp_path / "c.toml",
        phone.uri(),
        audit=folder / "audit.sqlite3",
        extra=f"""
        [health]
        listen = "127.0.0.1:0"
        [api]
        listen = "127.0.0.1:{free_port(socket.SOCK_STREAM)}"
        [api.clients.ops]
        token_env = "CARELESS_TOKEN"
        """,
    )
    run = DeskbotRun(config, {"CARELESS_TOKEN": TOKEN}, tmp_path / "run.log").start()
    try:
        assert run_deskbot("send", "-c", str(config), "486", "hi").returncode == 0
        wait_for(lambda: (folder / "audit.sqlite3-wal").exists(), 10, "the WAL file")
        assert mode(folder) == 0o700
        for name in ("audit.sqlite3", "audit.sqlite3-wal", "audit.sqlite3-shm"):
            assert mode(folder / name) == 0o600, name
        assert "can be read by other users" not in run.log()
    finally:
        run.stop()


def test_an_existing_readable_audit_log_is_named_in_a_warning(tmp_path, sipp, usual_umask):
    phone = sipp(200)
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    (folder / "audit.sqlite3").touch(mode=0o644)
    config = one_phone_config(tmp_path / "c.toml", phone.uri(), audit=folder / "audit.sqlite3")
    result = run_deskbot("send", "-c", str(config), "486", "hi")
    assert result.returncode == 0
    assert (
        f"the audit log {folder}/audit.sqlite3 can be read by other users: chmod 600 "
        f"{folder}/audit.sqlite3" in result.stderr
    )


@pytest.mark.parametrize(
    ("table", "secret", "key"),
    [
        (
            '[api]\n[api.clients.ops]\ntoken_env = "{s}"\n',
            "xoxb0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5",
            "api.clients.ops.token_env",
        ),
        (
            '[api]\n[api.clients.ops]\ntoken_env = "{s}"\n',
            "deadbeefdeadbeefdeadbeef01234567",
            "api.clients.ops.token_env",
        ),
        ('[nats]\nurl = "nats://deskbot:{s}@hub:4222"\ntoken_env = "T"\n', "hunter2", "nats.url"),
        (
            '[matrix]\nhomeserver = "https://bot:{s}@matrix.example.com"\n'
            'user_id = "@deskbot:example.com"\n',
            "s3cr3t-pass",
            "matrix.homeserver",
        ),
        (
            '[sip.registrar]\nuri = "sip:pbx.example.com"\nusername = "x"\npassword_env = "{s}"\n',
            "pw_pasted_here",
            "sip.registrar.password_env",
        ),
    ],
)
def test_a_secret_pasted_into_an_env_key_or_a_url_is_refused_and_never_echoed(
    tmp_path, table, secret, key
):
    config = write_config(
        tmp_path / "c.toml", '[sip]\nlisten = "127.0.0.1:0"\n' + table.format(s=secret)
    )
    for command in ("check-config", "run"):
        result = run_deskbot(command, "-c", str(config), env={"T": "x" * 20}, timeout=20)
        shown = result.stdout + result.stderr
        assert result.returncode == 2, result
        assert f"{config}: {key}: " in shown and secret not in shown


def test_labels_and_names_are_one_plain_line_wherever_the_directory_comes_from():
    hostile = "Re\r\nception\t\x1b[2J\u202egnp.exe " + "x" * 200_000
    directory = Directory(
        {"486": Phone("486", "sip:486@10.0.0.86", hostile)},
        {"alice": Person("alice", hostile, "486"), "bob": Person("bob", "\x1b\x07", None)},
        {},
    )
    for shown in (directory.phones["486"].label, directory.people["alice"].display):
        assert shown.startswith("Re ception [2J") and shown.isprintable()
        assert "\u202e" not in shown and len(shown) <= 64
    assert directory.people["bob"].display == "bob"  # nothing left: the name stands in


def test_the_shells_plain_lines_show_control_characters_escaped(tmp_path, sipp):
    phone = sipp(200)
    config = one_phone_config(
        tmp_path / "c.toml", phone.uri(), extra='label = "Desk\\u001b[31m\\nforged line"\n'
    )
    result = run_deskbot("send", "-c", str(config), "486", "hi")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert "\x1b" not in line and line.startswith("486\tDesk[31m forged line\t200 OK\t")


def send_from_a_wrapper(tmp_path: Path, config: Path, env: dict[str, str]) -> tuple[str, int]:
    """`deskbot send` from a cron-like wrapper with another child; (its output, that pid)."""
    script = (
        f"sleep 60 >/dev/null 2>&1 & echo $! > {tmp_path}/sleep.pid; "
        f"{DESKBOT} send -c {config} 486 hi; echo rc=$?"
    )
    wrapper = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        start_new_session=True,
    )
    return wrapper.stdout + wrapper.stderr, int((tmp_path / "sleep.pid").read_text())


def test_a_failpoint_kills_only_deskbots_own_processes_and_only_when_a_test_asks(tmp_path, sipp):
    phone = sipp(200)
    config = one_phone_config(tmp_path / "c.toml", phone.uri())
    stray = {"DESKBOT_FAILPOINT": "after-send"}
    output, sibling = send_from_a_wrapper(tmp_path, config, stray)
    assert "rc=0" in output  # a stray variable alone does nothing
    os.kill(sibling, signal.SIGKILL)

    output, sibling = send_from_a_wrapper(
        tmp_path, config, {**stray, "DESKBOT_FAILPOINT_TEST": "1"}
    )
    try:
        assert f"rc={128 + signal.SIGKILL}" in output  # deskbot died; the wrapper went on
        os.kill(sibling, 0)  # the wrapper's other child is alive
    finally:
        os.kill(sibling, signal.SIGKILL)


def test_a_later_send_from_the_shell_says_plainly_that_the_shell_sends_now_only(tmp_path, sipp):
    phone = sipp(200)
    config = one_phone_config(tmp_path / "c.toml", phone.uri(), audit=tmp_path / "audit.sqlite3")
    result = run_deskbot("send", "-c", str(config), "in", "20s", "486", "x")
    assert result.returncode == 2
    assert "`deskbot send` sends now only: plan later sends in chat" in result.stderr
    assert "need the audit log" not in result.stderr and phone.received() == []

    # `history` from the shell lists the shell's sends from that audit log, as chat's does
    assert run_deskbot("send", "-c", str(config), "486", "coffee").returncode == 0
    result = run_deskbot("send", "-c", str(config), "history")
    assert result.returncode == 0, result.stderr
    assert "Last sends:" in result.stdout and "→ 486 (6 chars): 1/1 delivered" in result.stdout
    assert "not kept" not in result.stderr + result.stdout
    result = run_deskbot("send", "-c", str(config), "scheduled")
    assert (result.returncode, result.stdout) == (0, "nothing is scheduled (by anyone)\n")
