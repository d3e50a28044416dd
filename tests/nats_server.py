"""A real nats-server with JetStream on 127.0.0.1, for the site tests and the benchmark.

Debian's `nats-server` package (2.9.10; `make test` installs it) or any newer
one on PATH. The store directory outlives a restart, as on a real hub.
Authentication is on, with the README's permissions: a user `front`, a user
`edge-SITE` per site (only its own site's subjects) and an `intruder` who may
publish and subscribe anywhere (what a careless set-up or a stolen login gives).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from peers import PeerDidNotStart, die_with_parent, listening, start_on_free_port, wait_ready

PASSWORD = "nats-password-of-{user}"  # the test users' passwords (never on a real hub)


def edge_permissions(site: str) -> dict[str, dict[str, list[str]]]:
    """What one office's edges may do: the README's list for `edge-SITE`."""
    return {
        "publish": {
            "allow": [
                f"deskbot.reply.{site}.>",
                "_INBOX.>",  # answering the front's "is an edge online?"
                "$JS.API.INFO",
                "$JS.API.STREAM.INFO.DESKBOT_SITES",
                "$JS.API.STREAM.CREATE.DESKBOT_SITES",
                "$JS.API.STREAM.INFO.KV_deskbot_claims",
                "$JS.API.STREAM.CREATE.KV_deskbot_claims",
                f"$JS.API.CONSUMER.INFO.DESKBOT_SITES.edge_{site}",
                f"$JS.API.CONSUMER.DURABLE.CREATE.DESKBOT_SITES.edge_{site}",
                f"$JS.API.CONSUMER.CREATE.DESKBOT_SITES.edge_{site}",
                f"$JS.API.CONSUMER.CREATE.DESKBOT_SITES.edge_{site}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.DESKBOT_SITES.edge_{site}",
                f"$JS.ACK.DESKBOT_SITES.edge_{site}.>",
                f"$KV.deskbot_claims.{site}.>",
                f"$JS.API.DIRECT.GET.KV_deskbot_claims.$KV.deskbot_claims.{site}.>",
                "$JS.API.STREAM.MSG.GET.KV_deskbot_claims",
            ]
        },
        "subscribe": {"allow": [f"deskbot.ping.{site}", f"_INBOX_{site}.>"]},
    }


def front_permissions() -> dict[str, dict[str, list[str]]]:
    """What the front (`deskbot run`, `deskbot send`) may do: the README's list for `front`."""
    return {
        "publish": {
            "allow": [
                "deskbot.send.*",
                "deskbot.ping.*",
                "$JS.API.INFO",
                "$JS.API.STREAM.INFO.DESKBOT_SITES",
                "$JS.API.STREAM.CREATE.DESKBOT_SITES",
                "$JS.API.STREAM.INFO.KV_deskbot_claims",
                "$JS.API.STREAM.CREATE.KV_deskbot_claims",
                "$KV.deskbot_claims.>",
                "$JS.API.DIRECT.GET.KV_deskbot_claims.>",
                "$JS.API.STREAM.MSG.GET.KV_deskbot_claims",
            ]
        },
        "subscribe": {"allow": ["deskbot.reply.*.>", "_INBOX.>"]},
    }


class NatsServer:
    def __init__(
        self,
        workdir: Path,
        sites: tuple[str, ...] = ("berlin", "lyon"),
        jetstream: bool = True,
        tls: tuple[Path, Path] | None = None,
    ):
        """tls: (certificate, key): clients must speak TLS (`tls://`)."""
        self.workdir, self.tls = workdir, tls
        self.port = 0  # chosen at the first start; a restart keeps it (clients reconnect there)
        self.proc: subprocess.Popen[bytes] | None = None
        self.sites, self.jetstream = sites, jetstream

    def password(self, user: str) -> str:
        return PASSWORD.format(user=user)

    def _config(self, port: int) -> Path:
        users = [
            {
                "user": "front",
                "password": self.password("front"),
                "permissions": front_permissions(),
            },
            {"user": "intruder", "password": self.password("intruder")},
        ]
        for site in self.sites:
            user = f"edge-{site}"
            users.append(
                {
                    "user": user,
                    "password": self.password(user),
                    "permissions": edge_permissions(site),
                }
            )
        lines = [
            f"listen: 127.0.0.1:{port}",
            f"authorization {{ users: {json.dumps(users)} }}",
        ]
        if self.tls is not None:
            cert, key = (json.dumps(str(p)) for p in self.tls)
            lines.append(f"tls {{ cert_file: {cert}, key_file: {key} }}")
        if self.jetstream:
            lines.append(f"jetstream {{ store_dir: {json.dumps(str(self.workdir / 'js'))} }}")
        path = self.workdir / "nats-server.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

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
            [binary, "-c", str(self._config(port))],
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
