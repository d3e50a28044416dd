"""`deskbot run` as a service: health, metrics, live directory reload, clean stop."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
from conftest import DeskbotRun, free_port, wait_for, write_config

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
    body = CONFIG.format(
        health=0, tmp=tmp_path, ok="sip:486@127.0.0.1:9", missing="sip:487@127.0.0.1:9"
    )
    etc = tmp_path / "etc"  # the config alone in its folder, as the watcher prefers
    etc.mkdir()
    path = write_config(etc / "d.toml", body)
    deskbot = DeskbotRun(path, {}, tmp_path / "run.log").start()
    try:
        assert deskbot.health()["ok"] is True
        path.write_text(body + '[phones.488]\nuri = "sip:488@127.0.0.1:9"\n')
        wait_for(
            lambda: "directory reloaded (file changed): 3 phones" in deskbot.log(),
            what="reload after the file changed",
        )
        path.write_text(body + '[people.bob]\nphone = "999"\n')
        wait_for(lambda: "config change rejected" in deskbot.log(), what="rejected edit")
        assert "people.bob.phone: phone '999' is not in [phones]" in deskbot.log()
        path.write_text(body)
        wait_for(lambda: "2 phones" in deskbot.log(), what="reload of the fixed file")
        deskbot.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "directory reloaded (SIGHUP)" in deskbot.log(), what="SIGHUP reload")
        assert deskbot.health()["ok"] is True
    finally:
        assert deskbot.stop() == 0
