"""A real Prometheus Alertmanager (Debian's prometheus-alertmanager) on loopback.

Its own config: one route with ``group_wait: 0s`` and ``group_interval: 1s``
and a webhook receiver pointing at deskbot with a bearer token, as the README
tells users to set it up. Used by the tests and by ``bench/alerts.py``. Its port
comes from tests/peers.py's ``start_on_free_port``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from peers import PeerDidNotStart, answers_http, die_with_parent, start_on_free_port

CONFIG = """\
route:
  receiver: desks
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: desks
    webhook_configs:
      - url: "{url}"
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: "{token}"
"""


STARTED = datetime.now(UTC) - timedelta(minutes=5)  # when the tests' alerts became active


class Alertmanager:
    def __init__(self, workdir: Path, webhook_url: str, token: str):
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise PeerDidNotStart(
                "prometheus-alertmanager is not installed: run `make test`, which installs it"
            )
        self.workdir, self.binary = workdir, binary
        self.webhook_url, self.token = webhook_url, token
        self.port, self.proc = start_on_free_port(
            self._start,
            "Alertmanager",
            lambda port: answers_http(f"http://127.0.0.1:{port}/-/ready"),
            lambda: self.log.read_text(errors="replace"),
            timeout=20,
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        home = self.workdir / f"alertmanager-{port}"
        home.mkdir()
        (home / "am.yml").write_text(CONFIG.format(url=self.webhook_url, token=self.token))
        self.log = home / "alertmanager.log"
        return subprocess.Popen(
            [
                self.binary,
                f"--config.file={home / 'am.yml'}",
                f"--storage.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise PeerDidNotStart(f"Alertmanager exited: {self.log.read_text()[-2000:]}")
        return answers_http(f"{self.base}/-/ready")

    def post_alert(
        self,
        labels: dict[str, str],
        annotations: dict[str, str],
        resolved: bool = False,
        starts_at: datetime = STARTED,
    ) -> None:
        """POST /api/v2/alerts as Prometheus does; resolved: endsAt in the past.

        Prometheus sends an alert with the same start (when it became active) to
        every Alertmanager of a pair, and again until it is resolved.
        """
        now = datetime.now(UTC)
        alert: dict[str, object] = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts_at.isoformat(),
        }
        if resolved:
            alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
        request = urllib.request.Request(
            f"{self.base}/api/v2/alerts",
            data=json.dumps([alert]).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200, resp.status

    def notifications(self) -> tuple[int, int]:
        """Webhook notifications sent and failed, from Alertmanager's own /metrics."""
        with urllib.request.urlopen(f"{self.base}/metrics", timeout=5) as resp:
            text = resp.read().decode()

        def count(metric: str) -> int:
            found = re.search(rf'^{metric}{{integration="webhook"}} (\S+)$', text, re.M)
            return int(float(found.group(1))) if found else 0

        return count("alertmanager_notifications_total"), count(
            "alertmanager_notifications_failed_total"
        )

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
