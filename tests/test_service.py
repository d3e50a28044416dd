"""`deskbot run` as a service: health, metrics, live directory reload, clean stop."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
from conftest import DeskbotRun, free_port, until, wait_for, write_config

from deskbot import config
from deskbot.app import Service
from deskbot.relay import ChatUser, Dispatch, Request
from deskbot.senders.sip.agent import SipAgent

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
    service = Service(cfg, SipAgent(cfg.settings.sip), sources=[])
    runner = asyncio.create_task(service.run())
    base = f"http://127.0.0.1:{port}"
    await until(lambda: service.health.port, what="the health endpoint")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
            health = await resp.json()
        assert health["ok"] is True and health["sip"]["alive"] is True
        user = ChatUser("console", "alice")
        job = service.relay.prepare(Request(user, "486,487 hello"))
        assert isinstance(job, Dispatch)
        await service.relay.deliver(job)
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    service.stopping.set()
    await runner  # a clean stop: no StartError
    assert 'deskbot_commands_total{chat="console"} 1.0' in text
    assert 'deskbot_deliveries_total{code="200",outcome="delivered"} 1.0' in text
    assert 'deskbot_deliveries_total{code="404",outcome="refused"} 1.0' in text
    assert "deskbot_delivery_seconds_bucket" in text
    assert "deskbot_sends_in_flight 0.0" in text


async def test_probe_every_shows_which_phones_answer_in_metrics(sipp, tmp_path: Path):
    up, wrong = sipp(200, method="OPTIONS"), sipp(404, method="OPTIONS")
    port = free_port(kind=1)
    body = CONFIG.format(health=port, tmp=tmp_path, ok=up.uri(), missing=wrong.uri("487"))
    body = body.replace("[health]", "[health]\nprobe_every = 0.2")
    cfg = config.load(write_config(tmp_path / "d.toml", body), {})
    service = Service(cfg, SipAgent(cfg.settings.sip), sources=[])
    runner = asyncio.create_task(service.run())
    sample = service.metrics.registry.get_sample_value
    probed = lambda: sample("deskbot_phone_up", {"extension": "487"}) is not None  # noqa: E731
    await until(probed, what="the first probe round")
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
    await until(lambda: len(up.received()) >= 2, what="the next probe round")
    service.stopping.set()
    await runner
    assert 'deskbot_phone_up{extension="486"} 1.0' in text
    assert 'deskbot_phone_up{extension="487"} 0.0' in text
    assert "deskbot_commands_total{" not in text  # a probe is no command


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


def test_healthz_shows_the_pbx_registration(sipp, tmp_path: Path):
    pbx = sipp(pbx_password="s3cret")
    body = CONFIG.format(health=0, tmp=tmp_path, ok=pbx.uri(), missing=pbx.uri("487"))
    body += (
        f'[sip.registrar]\nuri = "sip:127.0.0.1:{pbx.port}"\nusername = "deskbot"\n'
        'password_env = "DESKBOT_SIP_PASSWORD"\n'
    )
    etc = tmp_path / "etc"
    etc.mkdir()
    path = write_config(etc / "d.toml", body)
    right = DeskbotRun(path, {"DESKBOT_SIP_PASSWORD": "s3cret"}, tmp_path / "ok.log").start()
    try:
        health = wait_for(
            lambda: (h := right.health())["sip"]["registration"].get("code") and h,
            what="the REGISTER answer in /healthz",
        )
        assert health["ok"] is True
        assert health["sip"]["registration"] == {"code": 200, "reason": "OK", "active": True}
    finally:
        right.stop()
    wrong = DeskbotRun(path, {"DESKBOT_SIP_PASSWORD": "wrong"}, tmp_path / "bad.log").start()
    try:
        health = wait_for(
            lambda: (h := wrong.health())["sip"]["registration"].get("code") and h,
            what="the REGISTER answer in /healthz",
        )
        assert health["ok"] is False  # served with 503
        assert health["sip"]["registration"]["code"] == 403
    finally:
        wrong.stop()
