"""`deskbot run` as a service: health, metrics, live directory reload, clean stop."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
from conftest import free_port, wait_for, write_config

from deskbot import config
from deskbot.app import Service
from deskbot.relay import ChatUser
from deskbot.sip.agent import SipAgent

CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = 1.0
[health]
listen = "127.0.0.1:{health}"
[audit]
path = "{tmp}/audit.sqlite3"
[phones.486]
uri = "{ok}"
label = "Reception"
[phones.487]
uri = "{missing}"
[people.alice]
phone = "486"
"""


async def test_healthz_and_metrics_after_real_sends(sipp, tmp_path: Path):
    ok, missing = sipp(200), sipp(404)
    port = free_port(kind=1)
    path = write_config(
        tmp_path / "d.toml",
        CONFIG.format(health=port, tmp=tmp_path, ok=ok.uri(), missing=missing.uri("487")),
    )
    cfg = config.load(path, {})
    service = Service(cfg, SipAgent(cfg.settings.sip), adapters=[])
    runner = asyncio.create_task(service.run())
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        health = await resp.json()
                        break
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.02)
        assert health["ok"] is True and health["sip"]["alive"] is True
        user = ChatUser("console", "alice")
        await service.relay.handle(user, "486,487 hello")
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    service.stopping.set()
    assert await runner == 0
    assert 'deskbot_commands_total{chat="console"} 1.0' in text
    assert 'deskbot_deliveries_total{code="200",outcome="delivered"} 1.0' in text
    assert 'deskbot_deliveries_total{code="404",outcome="refused"} 1.0' in text
    assert "deskbot_delivery_seconds_bucket" in text
    assert "deskbot_sends_in_flight 0.0" in text


def test_directory_reloads_on_sighup_and_on_file_change_and_keeps_the_last_good(tmp_path):
    health = free_port(kind=1)
    body = CONFIG.format(
        health=health, tmp=tmp_path, ok="sip:486@127.0.0.1:9", missing="sip:487@127.0.0.1:9"
    )
    path = write_config(tmp_path / "d.toml", body)
    deskbot = str(Path(sys.executable).parent / "deskbot")
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [deskbot, "run", "-c", str(path)], stdout=subprocess.DEVNULL, stderr=log.open("wb")
    )
    try:

        def healthy() -> dict | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz") as resp:
                    return json.load(resp)
            except OSError:
                return None

        assert wait_for(healthy, what="/healthz")["ok"] is True
        path.write_text(body + '[phones.488]\nuri = "sip:488@127.0.0.1:9"\n')
        wait_for(
            lambda: "directory reloaded (file changed): 3 phones" in log.read_text(),
            what="reload after the file changed",
        )
        path.write_text(body + '[people.bob]\nphone = "999"\n')
        wait_for(lambda: "config change rejected" in log.read_text(), what="rejected edit")
        assert "people.bob.phone: phone '999' is not in [phones]" in log.read_text()
        path.write_text(body)
        wait_for(lambda: "2 phones" in log.read_text(), what="reload of the fixed file")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "directory reloaded (SIGHUP)" in log.read_text(), what="SIGHUP reload")
        assert healthy()["ok"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
