"""`deskbot run` as a service: health, metrics, live directory reload, clean stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from pathlib import Path

import aiohttp
from conftest import (
    DeskbotRun,
    api_post,
    free_port,
    healthz_status,
    phone_got,
    run_deskbot,
    until,
    wait_for,
    write_config,
)

from deskbot.relay.values import ChatUser, Dispatch, Request
from deskbot.senders.recording import RecordingSender
from deskbot.senders.sip.agent import SipAgent
from deskbot.service.front import Service
from deskbot.settings.load import load

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
    cfg = load(path, {})
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
    cfg = load(write_config(tmp_path / "d.toml", body), {})
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


def test_directory_reloads_on_sighup_and_on_file_change_and_keeps_the_last_good(tmp_path, sipp):
    added = sipp(200)  # 488, only in the edited directory: the last good one
    api = free_port(kind=socket.SOCK_STREAM)
    body = (
        CONFIG.format(
            health=0, tmp=tmp_path, ok="sip:486@127.0.0.1:9", missing="sip:487@127.0.0.1:9"
        )
        + f'[api]\nlisten = "127.0.0.1:{api}"\n[api.clients.ops]\ntoken_env = "OPS_TOKEN"\n'
    )
    etc = tmp_path / "etc"  # the config alone in its folder, as the watcher prefers
    etc.mkdir()
    path = write_config(etc / "d.toml", body)
    deskbot = DeskbotRun(path, {"OPS_TOKEN": "ops-0123456789abcdef"}, tmp_path / "run.log")
    deskbot.start()
    try:
        assert deskbot.health()["ok"] is True
        good = body + f'[phones.488]\nuri = "{added.uri("488")}"\n'
        path.write_text(good)
        wait_for(
            lambda: "directory reloaded (file changed): 3 phones" in deskbot.log(),
            what="reload after the file changed",
        )
        path.write_text(good + '[people.bob]\nphone = "999"\n')
        wait_for(lambda: "config change rejected" in deskbot.log(), what="rejected edit")
        assert "people.bob.phone: phone '999' is not in [phones]" in deskbot.log()
        # between the bad edit and its fix: the last good directory still sends
        status, answer = api_post(
            api, "ops-0123456789abcdef", "/v1/send", {"targets": "488", "text": "still here"}
        )
        assert status == 200, answer
        assert [(d["target"], d["code"]) for d in answer["deliveries"]] == [("488", 200)]
        assert [m.body for m in phone_got(added)] == [b"ops: still here"]
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


async def test_the_config_watcher_survives_any_file_and_applies_the_next_good_one(
    tmp_path, caplog, monkeypatch
):
    body = CONFIG.format(health=0, tmp=tmp_path, ok="sip:486@127.0.0.1:9", missing="sip:487@x")
    etc = tmp_path / "etc"
    etc.mkdir()
    path = write_config(etc / "d.toml", body)
    caplog.set_level(logging.INFO)
    service = Service(load(path, {}), RecordingSender(), sources=[])
    runner = asyncio.create_task(service.run())

    def logged(text: str) -> bool:
        return any(text in r.getMessage() for r in caplog.records)

    try:
        await until(lambda: logged("deskbot running"), what="the service to start")
        path.write_text(body + "[limits]\nmax_group_size = 1" + "0" * 5000 + "\n")
        await until(lambda: logged("config change rejected"), what="the rejected edit")
        real_load = load
        calls: list[Path] = []

        def load_once_broken(*args, **kwargs):
            calls.append(args[0])
            if len(calls) == 1:
                raise RuntimeError("a bug in the loader")
            return real_load(*args, **kwargs)

        monkeypatch.setattr("deskbot.service.front.load", load_once_broken)
        path.write_text(body + "\n")
        await until(lambda: logged("config reload (file changed) failed"), what="the failure")
        path.write_text(body + '[phones.488]\nuri = "sip:488@127.0.0.1:9"\n')
        await until(lambda: logged("directory reloaded (file changed): 3 phones"), what="reload")
    finally:
        service.stopping.set()
        await asyncio.wait_for(runner, 20)


def test_a_sighup_reload_of_26_levels_of_diamond_groups_does_not_stall_deskbot(tmp_path):
    from test_config import diamonds

    body = CONFIG.format(health=0, tmp=tmp_path, ok="sip:486@127.0.0.1:9", missing="sip:487@x")
    etc = tmp_path / "etc"
    etc.mkdir()
    path = write_config(etc / "d.toml", body)
    deskbot = DeskbotRun(path, {}, tmp_path / "run.log").start()
    try:
        groups = diamonds(26).split("\n", 2)[2]  # the groups, below the phone of their own
        path.write_text(body + groups.replace('["486"]', '["486", "487"]'))
        answers: list[int] = []
        problems: list[str] = []
        reloaded = threading.Event()

        def probe_health() -> None:  # /healthz all through the reload: each answered
            while not reloaded.is_set():
                try:
                    answers.append(healthz_status(deskbot.log())[0])
                except OSError as exc:  # a 5 s timeout: the event loop stalled
                    problems.append(repr(exc))

        prober = threading.Thread(target=probe_health)
        prober.start()
        try:
            wait_for(lambda: answers, what="healthz answered before the reload")
            deskbot.proc.send_signal(signal.SIGHUP)
            wait_for(
                lambda: "directory reloaded" in deskbot.log() and "53 groups" in deskbot.log(),
                timeout=15,
                what="the reload",
            )
        finally:
            reloaded.set()
            prober.join()
        assert problems == [] and set(answers) == {200}
        assert deskbot.health()["ok"] is True
    finally:
        assert deskbot.stop() == 0


def test_a_health_port_in_use_is_one_clean_line_and_exit_2(tmp_path: Path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        body = CONFIG.format(
            health=port, tmp=tmp_path, ok="sip:486@127.0.0.1:9", missing="sip:487@127.0.0.1:9"
        )
        result = run_deskbot("run", "-c", str(write_config(tmp_path / "d.toml", body)), timeout=30)
    finally:
        taken.close()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert [line.split(" ERROR ", 1)[1] for line in errors] == [
        f"deskbot: cannot start the health endpoint on 127.0.0.1:{port}: Address already in use"
    ]


async def test_reload_names_the_changed_restart_keys_compared_with_what_runs(tmp_path, caplog):
    body = CONFIG.format(health=0, tmp=tmp_path, ok="sip:486@127.0.0.1:9", missing="sip:487@x")
    path = write_config(tmp_path / "d.toml", body)
    service = Service(load(path, {}), RecordingSender(), sources=[])

    def restart_warnings() -> list[str]:
        found = [r.getMessage() for r in caplog.records if "after a restart" in r.getMessage()]
        caplog.clear()
        return found

    assert await service.reload("unchanged") and restart_warnings() == []
    path.write_text(body.replace("timeout = 1.0", 'timeout = 2.0\ndisplay_name = "Desk Bot"'))
    assert await service.reload("edit")
    assert restart_warnings() == [
        "config: changes to sip.display_name, sip.timeout take effect after a restart"
    ]
    path.write_text(body + '[phones.488]\nuri = "sip:488@127.0.0.1:9"\n')  # [sip] as it runs
    assert await service.reload("undone") and restart_warnings() == []
    assert len(service.relay.directory.phones) == 3
    path.write_text(body.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\n[health]', 1))
    assert not await service.reload("broken")  # [health] twice: rejected, nothing to warn about
    path.write_text(body + '[matrix]\nhomeserver = "http://x"\nuser_id = "@bot:x"\n')
    await service.reload("matrix added")  # the token is missing: rejected too
    assert restart_warnings() == []
    if service.audit:
        service.audit.close()


def test_sigterm_to_the_whole_process_group_stops_deskbot_without_restarting_its_worker(
    sipp, tmp_path
):
    from slack_standin import APP_TOKEN, BOT_TOKEN, SlackStandIn

    slack = SlackStandIn()
    try:
        phone = sipp(silent=True)  # a send still out at the signal keeps deskbot stopping a while
        body = CONFIG.format(health=0, tmp=tmp_path, ok=phone.uri(), missing="sip:487@x")
        body += f'[people.alice.slack]\n[slack]\napi_url = "{slack.api_url}"\n'
        body = body.replace('phone = "486"', 'phone = "486"\nslack = "U0ALICE"').replace(
            "[people.alice.slack]\n", ""
        )
        etc = tmp_path / "etc"
        etc.mkdir()
        path = write_config(etc / "d.toml", body)
        env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}
        deskbot = DeskbotRun(path, env, tmp_path / "run.log").start()
        wait_for(lambda: slack.socket_open, what="deskbot's Socket Mode socket")
        envelope = slack.push_command("486 closing time", "U0ALICE", "C0DESK")
        wait_for(lambda: slack.acks.get(envelope), what="the command's ack")
        phone.wait_received(1)
        assert deskbot.proc is not None
        os.killpg(deskbot.proc.pid, signal.SIGTERM)  # as a terminal or a service manager does
        assert deskbot.proc.wait(20) == 0
        log = deskbot.log()
        assert "restarting" not in log and " ERROR deskbot.sip" not in log, log
        assert any("486 (Reception): 408 Request Timeout" in p.text for p in slack.posts)
    finally:
        slack.close()
