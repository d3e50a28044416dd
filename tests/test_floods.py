"""Floods at `deskbot run`'s doors: a huge alert notification, idle connections by the thousand.

`deskbot run` as a service manager starts it, with [api] and [health] on
loopback and a SIPp desk phone; the floods come from other loopback addresses
(127.0.0.2, 127.0.1.x) so that 127.0.0.1 plays the monitoring system.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import API_SERVICE, DeskbotRun, SippPhone, free_port, wait_for, write_config

TOKENS = {"DESKBOT_TEST_MON": "mon-" + "m" * 28, "DESKBOT_TEST_NARROW": "nar-" + "n" * 28}

CONFIG = (
    API_SERVICE
    + """
[phones.486]
uri = "{phone}"
[phones.487]
uri = "{phone}"
[api.clients.monitoring]
token_env = "DESKBOT_TEST_MON"
targets = ["486"]
[api.clients.narrow]
token_env = "DESKBOT_TEST_NARROW"
targets = ["487"]
"""
)


class Gateway:
    def __init__(self, phone: SippPhone, run: DeskbotRun, api: int):
        self.phone, self.run, self.api = phone, run, api
        url = re.findall(r"health and metrics on (http://\S+/healthz)", run.log())[-1]
        self.healthz = url
        self.health_port = int(url.rsplit(":", 1)[1].split("/")[0])

    def post(self, path: str, body: bytes, token: str, timeout: float = 30) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api}{path}",
            body,
            {"Authorization": f"Bearer {TOKENS[token]}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def fds(self) -> int:
        assert self.run.proc is not None
        return psutil.Process(self.run.proc.pid).num_fds()


@pytest.fixture
def gateway(sipp, tmp_path: Path) -> Iterator[Gateway]:
    phone = sipp(200)
    api = free_port(socket.SOCK_STREAM)
    path = write_config(
        tmp_path / "deskbot.toml", CONFIG.format(tmp=tmp_path, phone=phone.uri(), api=api)
    )
    run = DeskbotRun(path, TOKENS, tmp_path / "deskbot.log").start()
    try:
        yield Gateway(phone, run, api)
    finally:
        run.stop()


def healthz_seconds(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
    return time.perf_counter() - started


def test_a_50000_alert_notification_is_one_text_and_healthz_answers_within_a_tenth_throughout(
    gateway,
):
    notification = {"status": "firing", "alerts": [{"status": "firing"}] * 50_000}
    body = json.dumps(notification, separators=(",", ":")).encode()
    assert len(body) < 1 << 20  # what the API takes in one body
    times: list[float] = []
    done = threading.Event()

    def ask_health() -> None:
        while not done.is_set():
            times.append(healthz_seconds(gateway.healthz))

    watcher = threading.Thread(target=ask_health)
    watcher.start()
    try:
        wait_for(lambda: len(times) >= 3, 10, "/healthz to answer")
        refused = gateway.post("/v1/alertmanager?targets=486", body, "DESKBOT_TEST_NARROW")
        status, answer = gateway.post("/v1/alertmanager?targets=486", body, "DESKBOT_TEST_MON")
        seen = len(times)
        wait_for(lambda: len(times) >= seen + 3, 10, "/healthz after the notification")
    finally:
        done.set()
        watcher.join()

    assert refused[0] == 403 and refused[1]["error"] == "forbidden"
    assert status == 202, answer
    assert max(times) < 0.1, f"/healthz took {max(times):.3f} s during the notification"
    shown = wait_for(lambda: gateway.phone.received(), 10, "the phone's text")
    text = shown[0].body.decode()
    assert text.startswith("monitoring: FIRING 50000× alert: alert; alert")
    assert text.endswith(" more") and len(text) <= 160 + len("monitoring: ")


def connect_from(source: str, port: int) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_thousand_idle_connections_do_not_use_up_deskbot_and_authenticated_peers_get_in(
    gateway,
):
    assert gateway.post("/v1/send", b'{"targets":"486","text":"hi"}', "DESKBOT_TEST_MON")[0] == 200
    log_before = gateway.run.log_path.stat().st_size
    flood = [connect_from("127.0.0.2", gateway.health_port) for _ in range(1100)]
    flood += [connect_from("127.0.0.2", gateway.api) for _ in range(1100)]
    # 127.0.1.1-20, 20 peers x 14: more than the API's unreserved places
    flood += [connect_from(f"127.0.1.{i}", gateway.api) for i in range(1, 21) for _ in range(14)]
    try:
        assert gateway.fds() < 600, "each idle connection holds a descriptor of deskbot's"
        assert healthz_seconds(gateway.healthz) < 1
        stranger = connect_from("127.0.0.9", gateway.api)  # no place left for a stranger
        assert closed_by_server(stranger, 10)  # generous: 1,000 connects queue
        status, _ = gateway.post("/v1/send", b'{"targets":"486","text":"x"}', "DESKBOT_TEST_MON")
        assert status == 200  # the monitoring system authenticated before: a reserved place
        silent = flood[0]
        assert closed_by_server(silent, 8), "a connection that sends no headers is closed"
        grown = gateway.run.log_path.stat().st_size - log_before
        assert grown < 5000, gateway.run.log(log_before)[-2000:]
    finally:
        for s in flood:
            s.close()
