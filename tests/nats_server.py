"""A real nats-server with JetStream on 127.0.0.1, for the site tests and the benchmark.

Debian's `nats-server` package (2.9.10; `make test` installs it) or any newer
one on PATH. The store directory outlives a restart, as on a real hub.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from peers import PeerDidNotStart, die_with_parent, listening, start_on_free_port, wait_ready


class NatsServer:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = 0  # chosen at the first start; a restart keeps it (clients reconnect there)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _log(self) -> str:
        path = self.workdir / "nats-server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        binary = shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin")
        if binary is None:
            raise PeerDidNotStart(
                "nats-server is not installed: run `make test`, which installs it"
            )
        return subprocess.Popen(
            [binary, "-js", "-sd", str(self.workdir / "js"), "-a", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "nats-server.log").open("ab"),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def start(self, timeout: float = 10.0) -> NatsServer:
        if self.port == 0:
            self.port, self.proc = start_on_free_port(
                self._start, "nats-server", why=self._log, timeout=timeout
            )
        else:
            self.proc = self._start(self.port)
            wait_ready(self.proc, lambda: listening(self.port), "nats-server", timeout, self._log)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
