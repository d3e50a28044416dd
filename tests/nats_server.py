"""A real nats-server with JetStream on 127.0.0.1, for the site tests and the benchmark.

Debian's `nats-server` package (2.9.10; `make test` installs it) or any newer
one on PATH. The store directory outlives a restart, as on a real hub.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class NatsServer:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = _free_tcp_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> NatsServer:
        binary = shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin")
        if binary is None:
            raise RuntimeError("nats-server is not installed: run `make test`, which installs it")
        self.proc = subprocess.Popen(
            [
                binary,
                "-js",
                "-sd",
                str(self.workdir / "js"),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "nats-server.log").open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start: see {self.workdir}/nats-server.log")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
