"""A real Synapse homeserver on 127.0.0.1 for the Matrix tests and the benchmark.

One server per test session (sqlite, loopback, a free port: tests/peers.py's
``start_on_free_port``; a restart keeps the port). It runs in its own process
group and gets SIGKILL when the test process dies (PR_SET_PDEATHSIG), so a
killed test run leaves nothing behind. Users are registered with the
shared-secret admin API; names are unique per call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from peers import answers_http, die_with_parent, start_on_free_port, stop_group, wait_ready

SERVER_NAME = "test.local"
_counter = itertools.count(1)


@dataclass(frozen=True)
class Account:
    user_id: str
    password: str
    access_token: str
    device_id: str


class Synapse:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = 0  # chosen at the first start; a restart keeps it (clients reconnect there)
        self.shared_secret = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = workdir / "homeserver.yaml"
        self.seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self, port: int) -> None:
        limits = "\n".join(
            f"{name}: {{per_second: 10000, burst_count: 10000}}"
            for name in (
                "rc_message",
                "rc_registration",
                "rc_joins_per_room",
                "rc_room_creation",
                "rc_admin_redaction",
                "rc_key_requests",
            )
        )
        self.config.write_text(
            textwrap.dedent(f"""\
            server_name: "{SERVER_NAME}"
            report_stats: false
            signing_key: "ed25519 a_test {self.seed}"
            registration_shared_secret: "{self.shared_secret}"
            pid_file: "{self.workdir}/homeserver.pid"
            media_store_path: "{self.workdir}/media"
            database:
              name: sqlite3
              args:
                database: "{self.workdir}/homeserver.db"
            listeners:
              - port: {port}
                bind_addresses: ["127.0.0.1"]
                type: http
                tls: false
                x_forwarded: false
                resources:
                  - names: [client]
                    compress: false
            federation_domain_whitelist: []
            trusted_key_servers: []
            enable_metrics: false
            bcrypt_rounds: 4
            presence:
              enabled: false
            rc_login:
              address: {{per_second: 10000, burst_count: 10000}}
              account: {{per_second: 10000, burst_count: 10000}}
              failed_attempts: {{per_second: 10000, burst_count: 10000}}
            rc_joins:
              local: {{per_second: 10000, burst_count: 10000}}
              remote: {{per_second: 10000, burst_count: 10000}}
            rc_invites:
              per_room: {{per_second: 10000, burst_count: 10000}}
              per_user: {{per_second: 10000, burst_count: 10000}}
              per_issuer: {{per_second: 10000, burst_count: 10000}}
            """)
            + limits
            + "\n"
        )

    # -- process ----------------------------------------------------------------
    def _log(self) -> str:
        return (self.workdir / "synapse.log").read_text(errors="replace")

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        self._write_config(port)
        return subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config)],
            cwd=self.workdir,
            stdout=(self.workdir / "synapse.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def _answers(self, port: int) -> bool:
        return answers_http(f"http://127.0.0.1:{port}/_matrix/client/versions")

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until it answers; PeerDidNotStart (with its log) if it does not."""
        if self.port == 0:
            self.port, self.proc = start_on_free_port(
                self._start, "Synapse", self._answers, self._log, timeout
            )
        else:
            self.proc = self._start(self.port)
            wait_ready(self.proc, lambda: self._answers(self.port), "Synapse", timeout, self._log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_group(self.proc, sig)

    # -- client-server API ------------------------------------------------------
    def request(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()[:500]!r}") from None

    def register(self, name: str, device_id: str | None = None) -> Account:
        """A new user `@NAME-N:test.local` (unique per call), logged in on `device_id`."""
        localpart = f"{name}-{next(_counter)}-{secrets.token_hex(2)}"
        password = secrets.token_hex(8)
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join([nonce.encode(), localpart.encode(), password.encode(), b"notadmin"])
        )
        self.request(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": False,
                "mac": mac.hexdigest(),
                "inhibit_login": True,
            },
        )
        user_id = f"@{localpart}:{SERVER_NAME}"
        login = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password,
        }
        if device_id:
            login["device_id"] = device_id
        resp = self.request("POST", "/_matrix/client/v3/login", login)
        return Account(user_id, password, resp["access_token"], resp["device_id"])


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synapse]:
    server = Synapse(tmp_path_factory.mktemp("synapse"))
    server.start()
    yield server
    server.stop()
