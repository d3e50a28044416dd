"""The Prometheus-style endpoints beside /healthz: /-/healthy, /-/ready and POST /-/reload."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from conftest import DeskbotRun, until, write_config

from deskbot.relay.values import ChatUser, Dispatch, NotRecorded, Request
from deskbot.senders.sip.agent import SipAgent
from deskbot.service.front import Service
from deskbot.service.health import HealthServer, Metrics
from deskbot.settings.load import load

CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = 2.0
[health]
listen = "127.0.0.1:0"
{health}
[audit]
path = "{tmp}/audit.sqlite3"
[phones.486]
uri = "{uri}"
label = "Reception"
"""
TOKEN = "reload-token-0123456789"


class SlowChat:
    """A chat that is connected but still starting (a Matrix first sync, say)."""

    name = "slow"
    connected = True

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def start(self) -> None:
        await self.go.wait()

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None: ...

    async def notify_admins(self, text: str) -> None: ...


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def test_ready_waits_for_the_sources_and_the_store_while_healthy_only_needs_the_process(
    sipp, tmp_path: Path
):
    phone = sipp(200)
    cfg = load(
        write_config(tmp_path / "d.toml", CONFIG.format(health="", tmp=tmp_path, uri=phone.uri())),
        {},
    )
    chat = SlowChat()
    service = Service(cfg, SipAgent(cfg.settings.sip), sources=[chat])
    runner = asyncio.create_task(service.run())
    try:
        await until(lambda: service.health.port, what="the health endpoint")
        base = f"http://127.0.0.1:{service.health.port}"
        async with aiohttp.ClientSession() as http:
            assert await get(http, f"{base}/-/healthy") == (200, {"healthy": True})
            status, ready = await get(http, f"{base}/-/ready")
            assert status == 503 and ready["started"] is False and ready["ok"] is False
            chat.go.set()
            await until(lambda: service._started, what="the sources to start")
            status, ready = await get(http, f"{base}/-/ready")
            assert status == 200 and ready["ok"] is True and ready["store"] is True

            service.audit.db.execute("DROP TABLE commands")  # the store breaks under deskbot
            job = service.relay.prepare(Request(ChatUser("console", "alice"), "486 hello"))
            assert isinstance(job, Dispatch)
            with pytest.raises(NotRecorded):
                await service.relay.deliver(job)
            status, ready = await get(http, f"{base}/-/ready")
            assert status == 503 and ready["store"] is False
            assert await get(http, f"{base}/-/healthy") == (200, {"healthy": True})
    finally:
        service.stopping.set()
        await asyncio.wait_for(runner, 20)


def post_reload(run: DeskbotRun, token: str | None = None) -> tuple[int, dict]:
    base = re.findall(r"health and metrics on (http://\S+)/healthz", run.log())[-1]
    request = urllib.request.Request(f"{base}/-/reload", b"", method="POST")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_post_reload_from_loopback_applies_an_edit_and_refuses_a_broken_one(sipp, tmp_path):
    phone = sipp(200)
    path = write_config(
        tmp_path / "d.toml", CONFIG.format(health="", tmp=tmp_path, uri=phone.uri())
    )
    run = DeskbotRun(path, {}, tmp_path / "run.log").start()
    try:
        path.write_text(path.read_text().replace('"Reception"', '"Front desk"'))
        assert post_reload(run) == (200, {"reloaded": True})
        assert "directory reloaded (POST /-/reload)" in run.log()
        path.write_text(path.read_text() + "[phones.487]\nuri = 12\n")
        status, answer = post_reload(run)
        assert status == 500 and answer["reloaded"] is False
        assert "the last good directory stays" in answer["error"]
        assert "config change rejected (POST /-/reload)" in run.log()
    finally:
        assert run.stop() == 0


def test_with_a_reload_token_every_reload_needs_it(sipp, tmp_path):
    phone = sipp(200)
    health = 'reload_token_env = "DESKBOT_RELOAD_TOKEN"'
    path = write_config(
        tmp_path / "d.toml", CONFIG.format(health=health, tmp=tmp_path, uri=phone.uri())
    )
    run = DeskbotRun(path, {"DESKBOT_RELOAD_TOKEN": TOKEN}, tmp_path / "run.log").start()
    try:
        assert post_reload(run)[0] == 403  # loopback is not enough once a token is set
        assert post_reload(run, "wrong-token-0123456789")[0] == 403
        assert post_reload(run, TOKEN) == (200, {"reloaded": True})
        assert TOKEN not in run.log()
    finally:
        assert run.stop() == 0


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("::ffff:10.0.0.5", False),
        ("", False),
    ],
)
def test_without_a_token_only_loopback_peers_may_reload(peer, allowed):
    """Other peers cannot be made on one machine's loopback: the check itself, per address."""

    async def reload() -> bool:
        return True

    server = HealthServer("127.0.0.1:0", Metrics(), lambda: {"ok": True}, reload=reload)
    request = make_mocked_request("POST", "/-/reload")
    request = request.clone(remote=peer or None)
    assert server._may_reload(request) is allowed


def healthcheck_command(port: int) -> list[str]:
    """The Dockerfile's HEALTHCHECK command, asking this test's health port."""
    dockerfile = (Path(__file__).parent.parent / "Dockerfile").read_text()
    after = dockerfile.split("\nHEALTHCHECK ", 1)[1]
    command = re.findall(r"^\s*CMD (\[.*\])$", after, re.M)[0]  # its own, not the image's CMD
    argv = json.loads(command)
    assert argv[0] == "python" and "/-/ready" in argv[-1]
    return [sys.executable, *argv[1:-1], argv[-1].replace(":9120/", f":{port}/")]


def test_the_images_healthcheck_passes_once_deskbot_run_is_ready(sipp, tmp_path):
    phone = sipp(200)
    path = write_config(
        tmp_path / "d.toml", CONFIG.format(health="", tmp=tmp_path, uri=phone.uri())
    )
    run = DeskbotRun(path, {}, tmp_path / "run.log").start()
    try:
        port = int(re.findall(r"health and metrics on http://\S+:(\d+)/healthz", run.log())[-1])
        check = subprocess.run(healthcheck_command(port), capture_output=True, timeout=10)
        assert check.returncode == 0, check.stderr
    finally:
        assert run.stop() == 0
    check = subprocess.run(healthcheck_command(port), capture_output=True, timeout=10)
    assert check.returncode != 0  # nothing answers: unhealthy


async def test_a_reload_applies_check_config_s_checks_and_what_the_process_runs_with(
    sipp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """A site phone added while deskbot runs without [nats] would be sent by the front's own
    SIP agent: the reload is refused (the last good directory stays, the log says why); with
    [directory.ldap], a reference LDAP's last names do not have is refused as check-config
    refuses it."""
    from deskbot.directory.snapshot import Directory, Person
    from deskbot.directory.sync import LdapSync

    phone = sipp(200)
    path = write_config(
        tmp_path / "d.toml", CONFIG.format(health="", tmp=tmp_path, uri=phone.uri())
    )
    cfg = load(path, {})
    service = Service(cfg, SipAgent(cfg.settings.sip), sources=[])
    base = path.read_text()
    site_phone = f'[phones.601]\nuri = "{phone.uri("601")}"\nsite = "berlin"\n'
    monkeypatch.setenv("DESKBOT_T_NATS", "nats-password")
    monkeypatch.setenv("DESKBOT_T_KEY", "k" * 32)
    monkeypatch.setenv("DESKBOT_T_LDAP", "ldap-password")
    nats = (
        '[nats]\nurl = "nats://127.0.0.1:9"\nuser = "front"\n'
        'password_env = "DESKBOT_T_NATS"\nkey_env = "DESKBOT_T_KEY"\n'
    )
    path.write_text(base + site_phone + nats)  # a good file for a fresh start...
    check = subprocess.run(
        [str(Path(sys.executable).parent / "deskbot"), "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout
    assert await service.reload("SIGHUP") is False  # ...but not for this running one
    assert "601" not in service.relay.directory.phones
    assert (
        f"{path}: phones.601.site: deskbot started without [nats]: nothing would take this "
        "phone to its site's edge; restart deskbot to apply [nats]"
    ) in caplog.text

    ldap = (
        '[directory.ldap]\nurl = "ldap://127.0.0.1:9"\nbase = "dc=example,dc=com"\n'
        'bind_dn = "cn=deskbot,dc=example,dc=com"\npassword_env = "DESKBOT_T_LDAP"\n'
        'phone_uri = "sip:{extension}@127.0.0.1"\n'
    )
    path.write_text(base + ldap)
    service.cfg = load(path, {"DESKBOT_T_LDAP": "x"})  # running with LDAP's last names:
    service.ldap = LdapSync(None)
    service.ldap.current = Directory({}, {"alice": Person("alice", "Alice", None)}, {})
    path.write_text(base + ldap + '[groups.desk]\nmembers = ["alice", "zed"]\n')
    assert await service.reload("SIGHUP") is False
    assert "groups.desk.members" in caplog.text and "zed" in caplog.text
    path.write_text(base + ldap + '[groups.desk]\nmembers = ["alice", "486"]\n')
    assert await service.reload("SIGHUP") is True
