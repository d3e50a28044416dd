"""Nothing is sent that the audit log cannot record: locked, read-only and full audit databases.

At start, deskbot says what is wrong in one line and exits 2. At run time a
command gets a clear reply in its thread and no phone gets the text. The
read-only and full disks are real: small tmpfs mounts made by the test.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    API_SERVICE,
    DeskbotRun,
    api_post,
    free_port,
    phone_got,
    run_deskbot,
    wait_for,
    write_config,
)
from matrix_people import alice_in_a_room_with_the_bot, text_of
from matrix_server import Account, Synapse
from test_crash_http import AM_PAYLOAD

CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = 1.0
[health]
listen = "127.0.0.1:0"
[audit]
path = "{audit}"
[phones.486]
uri = "{phone}"
"""
NOT_RECORDED = "not sent: deskbot cannot write its audit log, and sends nothing it cannot record"


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """mount("ro") or mount(size="256k") -> a fresh tmpfs, unmounted after the test."""
    mounted: list[Path] = []

    def make(*options: str, size: str = "4m") -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        opts = ",".join((f"size={size}", *options))
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)])
        if done.returncode != 0:
            pytest.fail("cannot mount a tmpfs (the tests run as root, like CI)", pytrace=False)
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(where: Path) -> None:
    """Write until the filesystem is full."""
    with (where / "filler").open("wb", buffering=0) as f:  # unbuffered: close cannot fail
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


def test_send_with_an_audit_log_on_a_read_only_disk_sends_nothing_and_exits_2(
    sipp, mount, tmp_path: Path
):
    phone = sipp(200)
    disk = mount("ro")
    path = write_config(tmp_path / "d.toml", CONFIG.format(audit=disk / "a.db", phone=phone.uri()))
    done = run_deskbot("send", "-c", str(path), "486", "hello")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"deskbot: cannot open the audit log {disk / 'a.db'}: ")
    assert line.endswith("nothing was sent")
    assert phone.received() == []


def test_run_with_an_audit_log_locked_by_another_process_stops_with_one_line_and_exit_2(
    sipp, tmp_path: Path
):
    audit = tmp_path / "a.db"
    holder = sqlite3.connect(audit, isolation_level=None)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the database
    path = write_config(tmp_path / "d.toml", CONFIG.format(audit=audit, phone=sipp(200).uri()))
    try:
        done = run_deskbot("run", "-c", str(path))
    finally:
        holder.close()
    assert done.returncode == 2
    errors = [ln for ln in done.stderr.splitlines() if " ERROR " in ln]
    assert len(errors) == 1 and "database is locked" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_run_with_an_audit_log_on_a_full_disk_stops_with_one_line_and_exit_2(
    sipp, mount, tmp_path: Path
):
    disk = mount(size="64k")
    fill(disk)
    path = write_config(tmp_path / "d.toml", CONFIG.format(audit=disk / "a.db", phone=sipp().uri()))
    done = run_deskbot("run", "-c", str(path))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.endswith(f"cannot start the audit log {disk / 'a.db'}: database or disk is full")


async def test_a_disk_that_fills_up_while_running_gets_a_clear_reply_and_sends_nothing(
    synapse: Synapse, sipp, people, bot: Account, deskbot, mount
):
    phone = sipp(200)
    disk = mount(size="1m")
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    run: DeskbotRun = deskbot(bot, alice, {"486": phone.uri()}, audit=disk / "a.db").start()
    first = await alice.say(room, "!deskphone 486 before")
    assert "200 OK" in text_of(await alice.reply_to(first))
    fill(disk)
    command = await alice.say(room, "!deskphone 486 after the disk filled up")
    assert NOT_RECORDED in text_of(await alice.reply_to(command))
    assert [m.body.decode().split(": ", 1)[1] for m in phone.received()] == ["before"]
    (disk / "filler").unlink()
    again = await alice.say(room, "!deskphone 486 with room again")
    assert "200 OK" in text_of(await alice.reply_to(again))
    wait_for(lambda: len(phone.received()) == 2, what="the second message")
    assert "cannot record the command" in run.log()


def test_the_api_is_503_on_a_disk_that_fills_up_and_the_retried_alert_arrives_once(
    sipp, mount, tmp_path: Path
):
    phone = sipp(200)
    disk = mount(size="1m")
    api = free_port(socket.SOCK_STREAM)
    body = API_SERVICE.format(tmp=disk, api=api) + (
        f'[api.clients.ops]\ntoken_env = "OPS_TOKEN"\n[phones.486]\nuri = "{phone.uri("486")}"\n'
    )
    token = "ops-0123456789abcdef"
    etc = tmp_path / "etc"
    etc.mkdir()
    run = DeskbotRun(write_config(etc / "d.toml", body), {"OPS_TOKEN": token}, tmp_path / "log")
    run.start()
    try:
        status, _ = api_post(api, token, "/v1/send", {"targets": "486", "text": "before"})
        assert status == 200
        fill(disk)
        status, answer = api_post(api, token, "/v1/send", {"targets": "486", "text": "full"})
        assert (status, answer["error"]) == (503, "unrecorded"), answer
        status, answer = api_post(api, token, "/v1/alertmanager?targets=486", AM_PAYLOAD)
        assert (status, answer["error"]) == (503, "unrecorded"), answer  # Alertmanager retries
        assert [m.body for m in phone_got(phone)] == [b"ops: before"]
        (disk / "filler").unlink()
        status, answer = api_post(api, token, "/v1/alertmanager?targets=486", AM_PAYLOAD)
        assert status in (200, 202), answer
        got = phone.wait_received(2)
        assert [m.body for m in got][1].decode().endswith("Freezer 2 at -12 °C")
        assert len(phone_got(phone)) == 2
    finally:
        run.stop()
