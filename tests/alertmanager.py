"""A real Prometheus Alertmanager (Debian's prometheus-alertmanager) on loopback.

Its own config: one route with ``group_wait: 0s`` and ``group_interval: 1s``
and a webhook receiver pointing at deskbot with a bearer token, as the README
tells users to set it up. Used by the tests and by ``bench/alerts.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from peers import die_with_parent

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


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Alertmanager:
    def __init__(self, workdir: Path, webhook_url: str, token: str):
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise FileNotFoundError(
                "prometheus-alertmanager is not installed: run `make test`, which installs it"
            )
        self.port = _free_tcp_port()
        self.base = f"http://127.0.0.1:{self.port}"
        home = workdir / f"alertmanager-{self.port}"
        home.mkdir()
        (home / "am.yml").write_text(CONFIG.format(url=webhook_url, token=token))
        self.log = home / "alertmanager.log"
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={home / 'am.yml'}",
                f"--storage.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        _wait(self.ready, 20, f"Alertmanager on port {self.port}")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"Alertmanager exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

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
