"""The test peers' one way to start (tests/peers.py): a port lost to another
process is retried elsewhere, a peer that never gets ready is one failure type
with what it said, and a peer does not outlive the test process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import wait_for
from peers import PeerDidNotStart, die_with_parent, free_tcp_port, start_on_free_port

HERE = Path(__file__).parent

# a peer that listens on argv[1] (exits with 1 if the port is taken) until killed
LISTENER = textwrap.dedent("""\
    import socket, sys, time
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    s.listen()
    time.sleep(60)
""")


def test_a_port_taken_before_the_peer_binds_it_is_retried_on_another_port(tmp_path):
    thief = socket.socket()
    thief.bind(("127.0.0.1", 0))
    thief.listen()
    taken = thief.getsockname()[1]
    ports = iter([taken, free_tcp_port()])
    errors = tmp_path / "err"

    def start(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", LISTENER, str(port)],
            stderr=errors.open("ab"),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    try:
        port, proc = start_on_free_port(
            start, "a listener", why=errors.read_text, pick=lambda: next(ports)
        )
        try:
            assert port != taken
            assert proc.poll() is None
            assert "Address already in use" in errors.read_text()  # the first one lost
        finally:
            proc.kill()
            proc.wait()
    finally:
        thief.close()


def test_a_peer_that_never_gets_ready_fails_with_what_it_said(tmp_path):
    def start(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys, time; print('no such listener'); time.sleep(60)"],
            stdout=(tmp_path / "out").open("wb"),
            preexec_fn=die_with_parent,
        )

    with pytest.raises(PeerDidNotStart, match=r"not ready after 0\.5 s: no such listener"):
        start_on_free_port(start, "a mute peer", why=(tmp_path / "out").read_text, timeout=0.5)


def test_a_peer_gets_killed_when_the_test_process_dies():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; from peers import die_with_parent; "
            "p = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent); "
            "print(p.pid, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    def gone() -> bool:
        try:
            with open(f"/proc/{child}/stat") as stat:
                return stat.read().split(") ")[1].startswith("Z")  # a zombie has ended
        except FileNotFoundError:
            return True

    wait_for(gone, timeout=10, what="the peer to die with its parent")
