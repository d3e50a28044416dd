"""Alerts confirmed at the desk: `&confirm=1` on the webhooks, and the silence it makes.

A notification posted to ``/v1/alertmanager?targets=...&confirm=1`` (as
Alertmanager would) puts the OK key on the phone's screen; the phone's press
makes a silence in the client's configured Alertmanager (a real Debian
``prometheus-alertmanager``), whose ``GET /api/v2/silences`` then lists it.
The payload's ``externalURL`` is never called; an unreachable Alertmanager is
told in the thread and logged, never raised; a resolved notification of the
silenced alert still reaches the phone.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from alertmanager import Alertmanager

from deskbot.directory import loader
from deskbot.relay.relay import Relay
from deskbot.relay.values import ChatUser, Policy
from deskbot.senders.recording import RecordingSender
from deskbot.service.confirms import ConfirmPoster
from deskbot.service.silences import Silencer, span
from deskbot.settings.load import ConfigError, parse
from deskbot.sources import alerts
from deskbot.sources.api import ApiSource
from deskbot.sources.console import ConsoleSource
from deskbot.store.audit import AuditLog

TOKENS = {"TOKEN_MON": "mon-token-0123456789abcdef", "TOKEN_LAB": "lab-token-0123456789abcdef"}
MON = {"Authorization": f"Bearer {TOKENS['TOKEN_MON']}"}
LAB = {"Authorization": f"Bearer {TOKENS['TOKEN_LAB']}"}
DESK = "http://127.0.0.1:9122"
LABELS = {"alertname": "FreezerWarm", "severity": "critical", "instance": "freezer2"}


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path_factory.mktemp("am"), "http://127.0.0.1:9/unused", "t" * 24)
    yield am
    am.stop()


@pytest.fixture
def trap() -> Iterator[socket.socket]:
    """A listening port the payload's externalURL names: nothing may connect to it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        yield s


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class World:
    def __init__(self, source: ApiSource, http, relay: Relay, phones, poster, out):
        self.source, self.http, self.relay, self.phones = source, http, relay, phones
        self.poster, self.out = poster, out

    async def notify(self, status: str, trap: socket.socket, query: str, who=MON, to="601"):
        payload = {
            "version": "4",
            "status": status,
            "receiver": "desks",
            "groupKey": '{}:{alertname="FreezerWarm"}',
            "externalURL": f"http://127.0.0.1:{trap.getsockname()[1]}",
            "alerts": [
                {
                    "status": status,
                    "labels": LABELS,
                    "annotations": {"summary": "Freezer 2 at -12 C"},
                    "startsAt": "2026-03-04T13:00:00Z",
                    "fingerprint": "f00d",
                }
            ],
        }
        url = f"http://127.0.0.1:{self.source.port}/v1/alertmanager?targets={to}{query}"
        async with self.http.post(url, data=json.dumps(payload), headers=who) as resp:
            body = await resp.json(content_type=None)
        await asyncio.gather(*self.source.sending)
        return resp.status, body

    async def press(self, *phones: str) -> None:
        confirmer = self.relay.confirmer
        assert confirmer is not None
        for phone in phones or ("601",):
            path = self.phones.asks[phone].url.removeprefix(DESK)
            assert confirmer.press(path, "127.0.0.2" if phone == "602" else "127.0.0.1")
        assert await self.poster.catch_up() == len(phones or ("601",))


@pytest.fixture
async def world(tmp_path: Path, alertmanager: Alertmanager) -> AsyncIterator[World]:
    raw = {
        "phones": {
            "601": {"uri": "sip:601@127.0.0.1:5070", "label": "Freezers", "format": "snom-xml"},
            "602": {"uri": "sip:602@127.0.0.2:5070", "label": "Cold room", "format": "snom-xml"},
        },
        "desk": {"listen": "127.0.0.1:0", "url": DESK},
        "api": {
            "listen": "127.0.0.1:0",
            "clients": {
                "monitoring": {
                    "token_env": "TOKEN_MON",
                    "alertmanager": alertmanager.base,
                    "silence_on_confirm": "2h",
                },
                "lab": {
                    "token_env": "TOKEN_LAB",
                    "alertmanager": f"http://127.0.0.1:{closed_port()}",
                    "silence_on_confirm": "30m",
                },
            },
        },
    }
    s = parse(raw, tmp_path / "t.toml", TOKENS).settings
    assert s.api is not None
    phones = RecordingSender()
    relay = Relay(
        phones, loader.from_settings(s), Policy.from_settings(s), AuditLog(tmp_path / "a")
    )
    assert relay.confirmer is not None
    out = io.StringIO()
    console = ConsoleSource(relay, ChatUser("console", "x"), out, prompt=False)
    clients = s.api.clients
    poster = ConfirmPoster(
        relay.confirmer.store,
        {"api": console},  # where an API command's lines would go: seen here
        lambda ext: relay.directory.phones[ext].label,
        silencer=Silencer(lambda: clients, timeout=2.0),
    )
    source = ApiSource(s.api, relay, TOKENS.__getitem__)
    await source.start()
    http = aiohttp.ClientSession()
    try:
        yield World(source, http, relay, phones, poster, out)
    finally:
        await http.close()
        await source.stop()


def silences(am: Alertmanager) -> list[dict]:
    with urllib.request.urlopen(f"{am.base}/api/v2/silences", timeout=5) as resp:
        return [s for s in json.load(resp) if s["status"]["state"] == "active"]


async def test_a_confirmed_alert_is_silenced_in_the_clients_alertmanager_for_its_labels(
    world: World, alertmanager: Alertmanager, trap: socket.socket
):
    before = len(silences(alertmanager))
    status, body = await world.notify("firing", trap, "&confirm=1")
    assert status == 202 and body["status"] == "accepted"
    assert world.phones.asks["601"].url.startswith(DESK + "/c/")
    assert world.phones.texts("601")[-1].endswith("FIRING: FreezerWarm: Freezer 2 at -12 C")
    await world.press()
    made = silences(alertmanager)
    assert len(made) == before + 1
    silence = made[-1] if before == 0 else next(s for s in made if "601" in s["comment"])
    assert silence["createdBy"] == "deskbot"
    assert "601 Freezers" in silence["comment"]
    matchers = {(m["name"], m["value"], m["isRegex"]) for m in silence["matchers"]}
    assert matchers == {(k, v, False) for k, v in LABELS.items()}
    starts, ends = (datetime.fromisoformat(silence[k]) for k in ("startsAt", "endsAt"))
    assert abs((ends - starts).total_seconds() - 7200) < 5
    assert "601 Freezers confirmed at" in world.out.getvalue()
    assert "; silenced in Alertmanager for 2h (" in world.out.getvalue()
    assert world.relay.confirmer and world.relay.confirmer.press(  # pressed again: no second
        world.phones.asks["601"].url.removeprefix(DESK), "127.0.0.1"
    )
    assert await world.poster.catch_up() == 0 and len(silences(alertmanager)) == before + 1
    # the alert resolves: the phone is told, silenced or not
    status, _ = await world.notify("resolved", trap, "")
    assert status == 202
    assert world.phones.texts("601")[-1].endswith("RESOLVED: FreezerWarm: Freezer 2 at -12 C")
    with pytest.raises(BlockingIOError):
        trap.accept()  # the payload's externalURL was never called


async def test_an_alert_confirmed_at_two_phones_is_silenced_once(
    world: World, alertmanager: Alertmanager, trap: socket.socket
):
    before = len(silences(alertmanager))
    status, _ = await world.notify("firing", trap, "&confirm=1", to="601,602")
    assert status == 202 and set(world.phones.asks) == {"601", "602"}
    await world.press("602", "601")
    assert len(silences(alertmanager)) == before + 1
    assert world.out.getvalue().count("silenced in Alertmanager") == 1


async def test_an_unreachable_alertmanager_is_told_and_logged_and_a_plain_alert_asks_nothing(
    world: World, trap: socket.socket, caplog
):
    status, _ = await world.notify("firing", trap, "")
    assert status == 202 and world.phones.asks == {}  # no confirm=1: no key
    status, body = await world.notify("firing", trap, "&confirm=yes")
    assert status == 400 and body["error"] == "wrong-type"
    status, _ = await world.notify("firing", trap, "&confirm=1", who=LAB)
    assert status == 202
    with caplog.at_level(logging.WARNING, "deskbot.silences"):
        await world.press()
    assert "not silenced in Alertmanager: it cannot be reached" in world.out.getvalue()
    assert any("no silence in" in r.getMessage() for r in caplog.records)


def test_a_silence_matches_the_labels_the_firing_alerts_share_or_nothing():
    def note(*alerts_: tuple[str, dict]) -> alerts.Notification:
        return alerts.Notification.model_validate(
            {"status": "firing", "alerts": [{"status": s, "labels": la} for s, la in alerts_]}
        )

    one = note(("firing", {"alertname": "A", "x": "1"}))
    assert alerts.labels(one) == (("alertname", "A"), ("x", "1"))
    two = note(("firing", {"alertname": "A", "x": "1"}), ("firing", {"alertname": "A", "x": "2"}))
    assert alerts.labels(two) == (("alertname", "A"),)
    assert alerts.labels(note(("firing", {"a": "1"}), ("firing", {"b": "2"}))) == ()
    assert alerts.labels(note(("resolved", {"a": "1"}))) == ()
    assert alerts.labels(note(("firing", {f"l{i}": "v" for i in range(65)}))) == ()
    assert [span(7200), span(1800), span(45), span(86400)] == ["2h", "30m", "45s", "1d"]


def test_silence_on_confirm_is_a_duration_and_needs_an_alertmanager(tmp_path):
    def problems(client: dict) -> list[str]:
        raw = {"api": {"clients": {"m": {"token_env": "T", **client}}}}
        try:
            parse(raw, tmp_path / "t.toml", {"T": "x" * 32})
        except ConfigError as exc:
            return [p.split(": ", 1)[1] for p in exc.problems]
        return []

    assert problems({"alertmanager": "http://127.0.0.1:9093", "silence_on_confirm": "2h"}) == []
    assert problems({"silence_on_confirm": "2h"}) == [
        "api.clients.m.silence_on_confirm: silences a confirmed alert in the client's "
        "alertmanager: give its URL"
    ]
    wrong = problems({"alertmanager": "http://127.0.0.1:9093", "silence_on_confirm": "2 hours"})
    assert len(wrong) == 1 and "is not a duration" in wrong[0]
    assert problems({"alertmanager": "http://u:p@127.0.0.1:9093"}) != []


async def test_a_hostile_alertmanager_is_not_followed_read_whole_or_waited_for(trap):
    from aiohttp import web

    from deskbot.settings.schema import ApiClient
    from deskbot.store.base import FollowUp

    hang = asyncio.Event()

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{trap.getsockname()[1]}/api/v2/silences")

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(200):  # 12.8 MB, more than anyone reads
            await resp.write(b'{"silenceID": "' + b"x" * 65536)
        return resp

    async def slow(request: web.Request) -> web.Response:
        await hang.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/moved/api/v2/silences", moved)
    app.router.add_post("/huge/api/v2/silences", huge)
    app.router.add_post("/slow/api/v2/silences", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    follow = FollowUp(client="c", labels=(("alertname", "A"),))
    try:
        for path, told in (
            ("moved", "not silenced in Alertmanager: it answered 302"),
            ("huge", "silenced in Alertmanager for 1h"),  # no id shown: it was never read
            ("slow", "not silenced in Alertmanager: it cannot be reached (TimeoutError)"),
        ):
            client = ApiClient(
                token_env="T",
                alertmanager=f"http://127.0.0.1:{port}/{path}",
                silence_on_confirm="1h",
            )
            silencer = Silencer(lambda c=client: {"c": c}, timeout=0.5)
            assert await silencer.silence(follow, "601", 1) == told
    finally:
        hang.set()
        await runner.cleanup()
    with pytest.raises(BlockingIOError):
        trap.accept()  # the redirect's target was never called
