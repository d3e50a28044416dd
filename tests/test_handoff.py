"""`deskbot send` and `deskbot probe` hand their command to a running `deskbot run`.

Through the socket beside the audit log the run carries the command out: the
same lines, the same exit codes and the same audit log as a send on its own;
without a run (or with a socket somebody else could use) the command sends on
its own as before.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from conftest import DeskbotRun, require, run_deskbot, write_config

from deskbot.cli import runhint


def two_phones(tmp_path: Path, ok: str, busy: str) -> Path:
    return write_config(
        tmp_path / "deskbot.toml",
        f"""
        [sip]
        listen = "127.0.0.1:0"
        timeout = 2.0
        [audit]
        path = "{tmp_path / "data" / "audit.sqlite3"}"
        [health]
        listen = "127.0.0.1:0"
        [phones.486]
        uri = "{ok}"
        label = "front desk"
        [phones.487]
        uri = "{busy}"
        [groups.both]
        members = ["486", "487"]
        """,
    )


def answers(cfg: Path) -> list[tuple]:
    """What every command left, without the times: each with the run or without it."""
    found = []
    for args in (
        ("send", "--json", "486", "hi"),
        ("send", "@both", "all of you"),
        ("send", "999", "nobody"),
        ("probe", "--json", "@both"),
    ):
        result = run_deskbot(*args[:1], "-c", str(cfg), *args[1:])
        out = result.stdout
        if "--json" in args:
            rows = [json.loads(line) for line in out.splitlines()]
            out = json.dumps([{k: v for k, v in r.items() if k != "elapsed_ms"} for r in rows])
        else:  # tab-separated: the fourth field is the time
            out = "\n".join("\t".join(f.split("\t")[:3]) for f in out.splitlines())
        found.append((args, result.returncode, out, result.stderr))
    return found


WORKER = "deskbot.senders.sip.worker"


def traced(cfg: Path, trace: Path, *words: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`deskbot send` under strace: its result, and its programs started and sockets asked
    (``execve`` and ``connect``), in order."""
    deskbot = str(Path(sys.executable).parent / "deskbot")
    strace = [require("strace"), "-f", "-qq", "-e", "trace=execve,connect", "-o", str(trace)]
    result = subprocess.run(
        [*strace, deskbot, "send", "-c", str(cfg), *words],
        capture_output=True,
        text=True,
        timeout=60,
    )
    calls = trace.read_text().splitlines()
    assert any(deskbot in line for line in calls)  # the trace saw the command itself
    return result, calls


def traced_send(cfg: Path, trace: Path, *words: str) -> tuple[subprocess.CompletedProcess, int]:
    """`deskbot send` under strace: its result, and how many SIP workers it started."""
    result, calls = traced(cfg, trace, *words)
    return result, sum("execve(" in line and WORKER in line for line in calls)


def audit_rows(tmp_path: Path) -> list[tuple]:
    with sqlite3.connect(tmp_path / "data" / "audit.sqlite3") as db:
        return db.execute("SELECT chat, sender_id, targets, state FROM commands").fetchall()


def test_a_send_with_a_run_goes_through_it_as_one_on_its_own(sipp, tmp_path):
    ok, busy = sipp(200), sipp(486)
    cfg = two_phones(tmp_path, ok.uri("486"), busy.uri("487"))
    alone = answers(cfg)
    assert [a[1] for a in alone] == [0, 1, 2, 3]  # the exit codes as documented
    run = DeskbotRun(cfg, {}, tmp_path / "run.log").start()
    try:
        sock = tmp_path / "data" / "audit.sqlite3.sock"
        assert oct(os.lstat(sock).st_mode & 0o777) == "0o600"
        handed = answers(cfg)
        log = run.log()
    finally:
        run.stop()
    assert handed == alone  # the same lines, exit codes and words
    user = os.environ.get("USER") or "root"
    assert f"command 3 from shell:{user}: 1/1 delivered" in log  # the run sent it
    assert f"command 4 from shell:{user}: 1/2 delivered" in log
    assert log.count("probe from shell") == 1
    rows = audit_rows(tmp_path)
    assert rows[:2] == rows[2:] and len(rows) == 4  # the same audit log, the same rows
    assert not sock.exists()  # a run that stops takes its socket away
    assert len(ok.received()) == 4 and len(busy.received()) == 2


class Stranger:
    """A socket at the run's place that is not this user's alone: nobody may talk to it."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.connects = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connects += 1
            conn.settimeout(5)
            conn.recv(1 << 16)  # the request
            conn.sendall(b'{"ok": true, "err": "", "out": "planted\\n", "sent": false}\n')
            conn.close()

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.sock.close()


def test_a_socket_others_may_use_or_of_another_user_is_never_asked(sipp, tmp_path):
    phone = sipp(200)
    cfg = two_phones(tmp_path, phone.uri("486"), phone.uri("487"))
    (tmp_path / "data").mkdir(mode=0o700)
    path = tmp_path / "data" / "audit.sqlite3.sock"
    stranger = Stranger(path)
    try:
        for change, why in (
            (lambda: os.chmod(path, 0o666), "others may use it (mode 666, not 600)"),
            (lambda: os.chown(path, 65534, 65534), ""),  # another user's run: not a word
        ):
            change()
            os.chmod(path, os.lstat(path).st_mode & 0o777 | 0o600)
            result = run_deskbot("send", "-c", str(cfg), "486", "hi")
            assert result.returncode == 0 and "planted" not in result.stdout
            assert result.stdout.startswith("486\tfront desk\t200 OK")  # sent on its own
            said = f"deskbot: not handing the send to {path}: {why}\n" if why else ""
            assert result.stderr == said
        assert stranger.connects == 0
        os.chown(path, os.getuid(), os.getgid())
        os.chmod(path, 0o600)
        assert run_deskbot("send", "-c", str(cfg), "486", "hi").stdout == "planted\n"
        assert stranger.connects == 1  # (the check itself: this one was asked)
    finally:
        stranger.close()


def test_a_send_read_against_other_settings_is_not_handed_over(sipp, tmp_path):
    phone = sipp(200)
    cfg = two_phones(tmp_path, phone.uri("486"), phone.uri("487"))
    other = tmp_path / "other.toml"  # the same audit log, another label for 486
    other.write_text(cfg.read_text().replace('"front desk"', '"back office"'))
    run = DeskbotRun(cfg, {}, tmp_path / "run.log").start()
    try:
        # a hint (as a run with these settings would have left) that this run takes it: the
        # send starts its worker late, not early, and still sends on its own
        sock = str(tmp_path / "data" / "audit.sqlite3.sock")
        runhint.remember(str(other), sock)
        result, calls = traced(other, tmp_path / "other.trace", "486", "hi")
        hinted_after = runhint.run_is_up(["-c", str(other)])  # the run's socket is still there
        handed = run_deskbot("send", "-c", str(cfg), "486", "hi")
        log = run.log()
    finally:
        run.stop()
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("486\tback office\t200 OK")  # its own settings
    asked = [i for i, line in enumerate(calls) if "connect(" in line and sock in line]
    started = [i for i, line in enumerate(calls) if "execve(" in line and WORKER in line]
    assert len(asked) == 1 and len(started) == 1
    assert asked[0] < started[0]  # the worker only once the run had refused the command
    assert not hinted_after  # the wrong hint is gone: the next send starts its worker early
    assert handed.stdout.startswith("486\tfront desk\t200 OK")
    assert log.count("from shell:") == 1  # only the send with the run's settings


def test_a_send_a_run_is_known_to_take_starts_no_worker_and_one_when_the_run_is_gone(
    sipp, tmp_path
):
    phone = sipp(200)
    cfg = two_phones(tmp_path, phone.uri("486"), phone.uri("487"))
    first, _ = traced_send(cfg, tmp_path / "first.trace", "486", "before the run")
    run = DeskbotRun(cfg, {}, tmp_path / "run.log").start()
    try:
        handed, started = traced_send(cfg, tmp_path / "handed.trace", "486", "the first")
        known, started_known = traced_send(cfg, tmp_path / "known.trace", "486", "the second")
    finally:
        run.stop()
    gone, started_gone = traced_send(cfg, tmp_path / "gone.trace", "486", "the run stopped")
    for result in (first, handed, known, gone):
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("486\tfront desk\t200 OK")
    assert started == 1  # started early, before the config said a run is up; not used
    assert started_known == 0  # the run took the last one: it takes this one, no worker
    assert started_gone == 1  # the socket is gone: the worker starts early again
    bodies = [m.body for m in phone.received()]
    assert bodies == [b"before the run", b"the first", b"the second", b"the run stopped"]
