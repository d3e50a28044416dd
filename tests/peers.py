"""Starting the test peers (SIPp, baresip, Kamailio, Synapse, slapd, nats-server,
Alertmanager, deskbot itself): one way to pick a port, start, wait, and fail.

- ``die_with_parent`` (a ``preexec_fn``): the peer gets SIGKILL when the test
  process dies, so a killed pytest leaves no SIPp or Synapse behind (Linux's
  parent-death signal); every peer also runs in its own session (process group).
- ``start_on_free_port``: a free port can be taken between choosing it and the
  peer binding it; the peer is started again on another port, a few times.
- ``PeerDidNotStart``: the one failure type, with what the peer said.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from functools import partial

import psutil

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class PeerDidNotStart(RuntimeError):
    """A test peer exited or never became ready; the message says which and why."""


def die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the process that started it dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def listens(proc: subprocess.Popen, port: int, kind: str = "tcp") -> bool:
    """True once `proc` itself listens on `port` (not whoever took the port first).

    kind: "tcp" (a listening socket) or "udp" (a bound one).
    """
    try:
        sockets = psutil.Process(proc.pid).net_connections(kind)
    except psutil.Error:
        return False
    wanted = psutil.CONN_LISTEN if kind == "tcp" else psutil.CONN_NONE
    return any(c.status == wanted and c.laddr and c.laddr.port == port for c in sockets)


def answers_http(url: str) -> bool:
    """True once GET url answers 2xx (a peer's readiness page)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return 200 <= resp.status < 300
    except OSError:
        return False


def stop_group(
    proc: subprocess.Popen | None, sig: int = signal.SIGTERM, grace: float = 10.0
) -> None:
    """Signal a peer's process group (a session of its own); SIGKILL after `grace` s."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_ready(
    proc: subprocess.Popen,
    ready: Callable[[], object],
    what: str,
    timeout: float,
    why: Callable[[], str],
) -> None:
    """Wait until ready() or raise PeerDidNotStart (exited, or not ready in time)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:  # first: another process may answer on a port it lost
            raise PeerDidNotStart(f"{what} exited with {proc.returncode}: {why()[-2000:]}")
        if ready():
            return
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise PeerDidNotStart(f"{what} not ready after {timeout} s: {why()[-2000:]}")
        time.sleep(0.02)


def start_on_free_port(
    start: Callable[[int], subprocess.Popen],
    what: str,
    ready: Callable[[int], object] | None = None,
    why: Callable[[], str] = lambda: "",
    timeout: float = 30.0,
    attempts: int = 5,
    pick: Callable[[], int] = free_tcp_port,
) -> tuple[int, subprocess.Popen]:
    """start(port) a peer on a free port until it is ready; another port if it lost the race.

    ready(port) says the peer answers; without it, that the started process listens there.
    """
    problem = ""
    for _attempt in range(attempts):
        port = pick()
        proc = start(port)
        check = (lambda p=proc, n=port: listens(p, n)) if ready is None else partial(ready, port)
        try:
            wait_ready(proc, check, f"{what} on port {port}", timeout, why)
        except PeerDidNotStart as exc:
            problem = str(exc)
            if proc.returncode is not None:
                continue  # exited at start: most likely the port was taken meanwhile
            raise  # alive but never ready: another port would not help
        return port, proc
    raise PeerDidNotStart(f"{what} did not start in {attempts} attempts: {problem}")
