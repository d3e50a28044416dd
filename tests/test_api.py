"""The HTTP API as a client sees it: tokens, scopes, status codes, JSON; webhooks recorded first.

deskbot's relay and ApiSource run in the test's loop on a recording sender
(phones answer from a table); requests go over real HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from conftest import until

from deskbot.directory import loader
from deskbot.relay.relay import Relay
from deskbot.relay.values import Policy
from deskbot.senders.recording import RecordingSender
from deskbot.settings.load import parse
from deskbot.settings.schema import Settings
from deskbot.sources.api import MAX_BODY, ApiSource
from deskbot.store.audit import AuditLog

TOKENS = {
    "TOKEN_MON": "mon-0123456789abcdef",
    "TOKEN_LAB": "lab-0123456789abcdef",
    "TOKEN_CI": "ci-00123456789abcdef",
}
MON = {"Authorization": f"Bearer {TOKENS['TOKEN_MON']}"}
LAB = {"Authorization": f"Bearer {TOKENS['TOKEN_LAB']}"}
CI = {"Authorization": f"Bearer {TOKENS['TOKEN_CI']}"}

AM_PAYLOAD = {
    "version": "4",
    "groupKey": '{}:{alertname="FreezerWarm"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "desks",
    "groupLabels": {"alertname": "FreezerWarm"},
    "commonLabels": {"alertname": "FreezerWarm", "severity": "critical"},
    "commonAnnotations": {"summary": "Freezer 2 at -12 °C"},
    "externalURL": "http://am:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "FreezerWarm", "severity": "critical"},
            "annotations": {"summary": "Freezer 2 at -12 °C"},
            "startsAt": "2026-11-26T08:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": "9f2c1a0b7e3d4c5a",
        }
    ],
}

# Grafana's documented webhook example (grafana.com/docs, "Webhook notifier", version 1)
GRAFANA_PAYLOAD = {
    "receiver": "My Super Webhook",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
            "annotations": {
                "description": "The system has high memory usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone us-1",
            },
            "startsAt": "2021-10-12T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"B": 44.23943737541908, "C": 1},
        },
        {
            "status": "firing",
            "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
            "annotations": {
                "description": "The system has high CPU usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone eu-1",
            },
            "startsAt": "2021-10-12T09:56:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
            "fingerprint": "bc97ff14869b13e3",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"B": 44.23943737541908, "C": 1},
        },
    ],
    "groupLabels": {},
    "commonLabels": {"team": "blue"},
    "commonAnnotations": {},
    "externalURL": "https://play.grafana.org/",
    "version": "1",
    "groupKey": '{}:{team="blue"}',
    "truncatedAlerts": 0,
    "title": "[FIRING:2]  (blue)",
    "state": "alerting",
    "message": "**Firing**\n\nLabels:\n - alertname = T2\n",
}


def settings(**overrides) -> Settings:
    raw = {
        "phones": {ext: {"uri": f"sip:{ext}@10.0.0.{ext[1:]}"} for ext in ("486", "487", "488")},
        "groups": {"ops": {"members": ["486", "487"]}, "all": {"members": ["486", "487", "488"]}},
        "access": {"senders": [], "admins": []},
        "api": {
            "listen": "127.0.0.1:0",
            "clients": {
                "monitoring": {"token_env": "TOKEN_MON", "targets": ["@ops"], "name": "Alerts"},
                "lab": {"token_env": "TOKEN_LAB", "targets": ["488"]},
                "ci": {"token_env": "TOKEN_CI"},
            },
        },
        **overrides,
    }
    return parse(raw, Path("t.toml"), TOKENS).settings


class Api:
    def __init__(self, source: ApiSource, http: aiohttp.ClientSession, audit: Path):
        self.source, self.http, self.audit = source, http, audit
        self.base = f"http://127.0.0.1:{source.port}"

    async def post(self, path: str, body: object = None, headers=None, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.http.post(self.base + path, data=data, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None), resp.headers

    def commands(self) -> list[tuple]:
        with sqlite3.connect(self.audit) as db:
            return db.execute("SELECT chat, sender_id, place, targets FROM commands").fetchall()


@pytest.fixture
def phones() -> RecordingSender:
    return RecordingSender(answers={"487": 404})


@pytest.fixture
async def api_for(phones, tmp_path) -> AsyncIterator[Callable[..., object]]:
    started: list[tuple[ApiSource, aiohttp.ClientSession]] = []

    async def make(**overrides) -> Api:
        s = settings(**overrides)
        audit = tmp_path / "audit.sqlite3"
        relay = Relay(phones, loader.from_settings(s), Policy.from_settings(s), AuditLog(audit))
        assert s.api is not None
        source = ApiSource(s.api, relay, TOKENS.__getitem__)
        await source.start()
        http = aiohttp.ClientSession()
        started.append((source, http))
        return Api(source, http, audit)

    yield make
    for source, http in started:
        await http.close()
        await source.stop()


async def test_send_answers_each_phones_code_once_the_phones_answered(api_for, phones):
    api = await api_for()
    status, body, _ = await api.post("/v1/send", {"targets": "@ops", "text": "lunch"}, MON)
    assert status == 200
    assert [(d["target"], d["code"], d["reason"]) for d in body["deliveries"]] == [
        ("486", 200, "OK"),
        ("487", 404, "Not Found"),
    ]
    first = body["deliveries"][0]
    assert first["uri"] == "sip:486@10.0.0.86" and first["elapsed_ms"] == 1.0
    assert body["delivered"] == 1 and body["phones"] == 2
    assert phones.texts("486") == ["Alerts: lunch"]  # the client's name before the text
    assert api.commands() == [("api", "monitoring", "api", "@ops")]  # audit rows name it


async def test_a_send_retried_with_its_idempotency_key_is_answered_again_and_sent_once(
    api_for, phones
):
    api = await api_for()
    once = {**MON, "Idempotency-Key": "deploy-4711:notify"}
    first = await api.post("/v1/send", {"targets": "@ops", "text": "deploy done"}, once)
    again = await api.post("/v1/send", {"targets": "@ops", "text": "deploy done"}, once)
    assert first[0] == again[0] == 200
    codes = [(d["target"], d["code"]) for d in first[1]["deliveries"]]
    assert [(d["target"], d["code"]) for d in again[1]["deliveries"]] == codes
    assert codes == [("486", 200), ("487", 404)]
    assert phones.texts("486") == ["Alerts: deploy done"]  # sent once
    other = await api.post("/v1/send", {"targets": "486", "text": "next"}, MON)
    assert other[0] == 200 and phones.texts("486")[-1] == "Alerts: next"  # no key: as usual
    bad = await api.post(
        "/v1/send", {"targets": "486", "text": "x"}, {**MON, "Idempotency-Key": "a b"}
    )
    assert bad[0] == 400 and bad[1]["error"] == "bad-idempotency-key"


async def test_a_retry_while_the_first_send_is_still_going_on_is_409(api_for, phones):
    api = await api_for()
    phones.gate = asyncio.Event()  # the phones answer only when the test lets them
    once = {**MON, "Idempotency-Key": "k-409"}
    first = asyncio.create_task(api.post("/v1/send", {"targets": "486", "text": "hi"}, once))
    await until(lambda: api.commands(), what="the first send recorded")
    retry = await api.post("/v1/send", {"targets": "486", "text": "hi"}, once)
    assert retry[0] == 409 and retry[1]["error"] == "in-progress"
    phones.gate.set()
    assert (await first)[0] == 200 and phones.texts("486") == ["Alerts: hi"]


async def test_a_refusal_is_not_kept_for_its_idempotency_key(api_for, phones):
    api = await api_for()
    once = {**MON, "Idempotency-Key": "k1"}
    refused = await api.post("/v1/send", {"targets": "999", "text": "hi"}, once)
    fixed = await api.post("/v1/send", {"targets": "486", "text": "hi"}, once)
    assert refused[0] >= 400 and fixed[0] == 200
    assert phones.texts("486") == ["Alerts: hi"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-0123456789abcdef"},
        {"Authorization": f"Basic {TOKENS['TOKEN_MON']}"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer " + TOKENS["TOKEN_MON"][:-1]},
    ],
)
async def test_a_missing_or_wrong_token_is_401_and_sends_nothing(api_for, phones, headers):
    api = await api_for()
    for path in ("/v1/send", "/v1/alertmanager?targets=486", "/v1/grafana?targets=486"):
        status, body, resp_headers = await api.post(path, {"targets": "486", "text": "hi"}, headers)
        assert status == 401 and body["error"] == "unauthorized"
        assert resp_headers["WWW-Authenticate"] == 'Bearer realm="deskbot"'
    assert phones.sent == [] and api.commands() == []


async def test_a_target_outside_the_clients_list_is_403_and_sends_nothing(api_for, phones):
    api = await api_for()
    for targets in ("488", "486,488", "@all"):  # @all holds 488, which @ops does not
        status, body, _ = await api.post("/v1/send", {"targets": targets, "text": "x"}, MON)
        assert status == 403 and body["error"] == "forbidden"
        assert "may not send to 488" in body["message"]
    status, _, _ = await api.post("/v1/alertmanager?targets=486", AM_PAYLOAD, LAB)
    assert status == 403
    assert phones.sent == []
    status, _, _ = await api.post("/v1/send", {"targets": "486", "text": "in scope"}, MON)
    assert status == 200  # a phone of @ops may be named directly
    status, _, _ = await api.post("/v1/send", {"targets": "@all", "text": "any"}, CI)
    assert status == 200  # a client without a list reaches any target


@pytest.mark.parametrize(
    ("body", "status", "problem", "says"),
    [
        (b"{not json", 400, "bad-json", "not JSON"),
        (b"[" * 100_000, 400, "bad-json", "not JSON"),
        (b'["486", "hi"]', 400, "bad-json", "JSON object"),
        (b'{"text": "hi"}', 400, "missing-field", "'targets' is missing"),
        (b'{"targets": "486"}', 400, "missing-field", "'text' is missing"),
        (b'{"targets": 486, "text": "hi"}', 400, "wrong-type", "'targets' must be a string"),
        (b'{"targets": "486", "text": ["hi"]}', 400, "wrong-type", "'text' must be a string"),
        (b'{"targets": "999", "text": "hi"}', 422, "unknown-target", "999 is not in the dir"),
        (b'{"targets": "486", "text": "  "}', 422, "empty-text", "empty"),
        (b'{"targets": "486", "text": "' + b"x" * 161 + b'"}', 422, "too-long", "limit is 160"),
        (b'{"targets": "486", "text": "' + b"x" * MAX_BODY + b'"}', 413, "too-large", "over"),
    ],
)
async def test_bad_input_gets_a_4xx_that_names_the_problem(
    api_for, phones, body, status, problem, says
):
    api = await api_for()
    got, answer, _ = await api.post("/v1/send", headers=CI, raw=body)
    assert (got, answer["error"]) == (status, problem)
    assert says in answer["message"]
    assert phones.sent == []


async def test_each_client_has_its_own_rate_limit_and_is_told_when_to_retry(api_for, phones):
    api = await api_for(limits={"per_sender_per_minute": 2})
    for _ in range(2):
        status, _, _ = await api.post("/v1/send", {"targets": "488", "text": "x"}, CI)
        assert status == 200
    status, body, headers = await api.post("/v1/send", {"targets": "488", "text": "x"}, CI)
    assert status == 429 and body["error"] == "rate-limited"
    assert 50 <= int(headers["Retry-After"]) <= 60
    status, _, _ = await api.post("/v1/send", {"targets": "488", "text": "x"}, LAB)
    assert status == 200  # another client is not held up
    status, _, headers = await api.post("/v1/alertmanager?targets=488", AM_PAYLOAD, CI)
    assert status == 503 and "Retry-After" in headers  # Alertmanager retries a 5xx only
    assert len(phones.texts("488")) == 3


async def test_the_group_cap_applies_to_clients(api_for, phones):
    api = await api_for(limits={"max_group_size": 2})
    status, body, _ = await api.post("/v1/send", {"targets": "@all", "text": "x"}, CI)
    assert status == 403 and body["error"] == "group-too-large"
    assert phones.sent == []


async def test_an_alertmanager_notification_is_answered_once_recorded_and_sent_after(
    api_for, phones, monkeypatch
):
    held = phones
    held.gate = asyncio.Event()  # the phones answer only when the test lets them
    asked: list[str] = []
    answer = held.send

    async def send(phone, text, ask=None):
        asked.append(phone.extension)  # before the gate: the phone has the request
        return await answer(phone, text, ask)

    held.send = send
    api = await api_for()
    post = api.post("/v1/alertmanager?targets=@ops", AM_PAYLOAD, MON)
    status, body, _ = await asyncio.wait_for(post, 10)  # a webhook that waits for phones hangs
    assert status == 202 and body["status"] == "accepted" and body["phones"] == ["486", "487"]
    assert api.commands() == [("api", "monitoring", "alertmanager", "@ops")]
    await until(lambda: sorted(asked) == ["486", "487"], what="both phones asked")
    assert held.sent == []  # and neither has answered: the 202 did not wait for them
    held.gate.set()
    await until(lambda: len(held.sent) == 2, what="the alert on both phones")
    assert held.texts("486") == ["Alerts: FIRING: FreezerWarm: Freezer 2 at -12 °C"]


async def test_a_notification_delivered_again_reaches_the_phones_once(api_for, phones):
    api = await api_for()
    url = "/v1/alertmanager?targets=486"
    first, again = await asyncio.gather(
        api.post(url, AM_PAYLOAD, MON), api.post(url, AM_PAYLOAD, MON)
    )  # an HA pair: both at once
    assert sorted([first[0], again[0]]) == [200, 202]
    status, body, _ = await api.post(url, AM_PAYLOAD, MON)  # a retry
    assert status == 200 and body == {"status": "duplicate"}
    await until(lambda: phones.texts("486"), what="the alert")
    resolved = json.loads(json.dumps(AM_PAYLOAD).replace('"firing"', '"resolved"'))
    status, _, _ = await api.post(url, resolved, MON)
    assert status == 202
    await until(lambda: len(phones.texts("486")) == 2, what="the resolution")
    assert phones.texts("486") == [
        "Alerts: FIRING: FreezerWarm: Freezer 2 at -12 °C",
        "Alerts: RESOLVED: FreezerWarm: Freezer 2 at -12 °C",
    ]


async def test_the_same_notification_after_the_window_is_sent_again(api_for, phones):
    """Alertmanager repeats a firing alert every repeat_interval: that reminder is sent."""
    api = await api_for()
    url = "/v1/alertmanager?targets=486"
    assert (await api.post(url, AM_PAYLOAD, MON))[0] == 202
    assert (await api.post(url, AM_PAYLOAD, MON))[0] == 200
    window = api.source.settings.dedup_window
    with sqlite3.connect(api.audit) as db:  # as if the first came longer ago than the window
        db.execute("UPDATE commands SET ts = ?", (time.time() - window - 1,))
    status, _, _ = await api.post(url, AM_PAYLOAD, MON)
    assert status == 202
    await until(lambda: len(phones.texts("486")) == 2, what="the reminder")
    assert (await api.post(url, AM_PAYLOAD, MON))[0] == 200  # and the reminder's repeat is not


async def test_grafanas_documented_payload_reaches_the_phone(api_for, phones):
    api = await api_for()
    status, _, _ = await api.post("/v1/grafana?targets=488", GRAFANA_PAYLOAD, CI)
    assert status == 202
    await until(lambda: phones.texts("488"), what="the Grafana alert")
    assert phones.texts("488") == [
        "ci: FIRING 2: High memory usage: This alert was triggered for zone us-1; "
        "High CPU usage: This alert was triggered for zone eu-1"
    ]


@pytest.mark.parametrize(
    ("path", "body", "status", "problem"),
    [
        ("/v1/alertmanager", AM_PAYLOAD, 400, "missing-targets"),
        ("/v1/alertmanager?targets=999", AM_PAYLOAD, 422, "unknown-target"),
        ("/v1/alertmanager?targets=486", {"status": "firing"}, 400, "bad-payload"),
        ("/v1/grafana?targets=486", {"status": "ok", "alerts": [{}]}, 400, "bad-payload"),
        ("/v1/grafana?targets=486", [1, 2], 400, "bad-payload"),
    ],
)
async def test_a_webhook_that_cannot_be_sent_is_a_4xx_that_alertmanager_does_not_retry(
    api_for, phones, path, body, status, problem
):
    api = await api_for()
    got, answer, _ = await api.post(path, body, CI)
    assert (got, answer["error"]) == (status, problem)
    assert phones.sent == []


async def test_a_webhook_is_503_when_the_audit_log_cannot_record_it(api_for, phones):
    api = await api_for()
    assert api.source.relay.audit is not None
    api.source.relay.audit.db.execute("PRAGMA query_only = ON")  # a full or read-only disk
    status, body, _ = await api.post("/v1/alertmanager?targets=486", AM_PAYLOAD, MON)
    assert status == 503 and body["error"] == "unrecorded"
    assert phones.sent == []


async def test_a_body_that_never_finishes_arriving_is_408(api_for, phones, monkeypatch):
    monkeypatch.setattr("deskbot.sources.api.BODY_TIMEOUT", 0.3)
    api = await api_for()
    reader, writer = await asyncio.open_connection("127.0.0.1", api.source.port)
    token = TOKENS["TOKEN_CI"]
    writer.write(
        b"POST /v1/send HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        + f"Authorization: Bearer {token}\r\n\r\n".encode()
        + b'{"targets": "486",'
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 408")
    assert phones.sent == []


async def test_a_clients_targets_reload_with_the_policy(api_for, phones):
    api = await api_for()
    relay = api.source.relay
    status, _, _ = await api.post("/v1/send", {"targets": "488", "text": "x"}, MON)
    assert status == 403
    s = settings()
    assert s.api is not None
    clients = dict(s.api.clients)
    clients["monitoring"] = replace(clients["monitoring"], targets=["@all"])
    s = replace(s, api=replace(s.api, clients=clients))
    relay.use(relay.directory, Policy.from_settings(s))  # what a reload of the file does
    status, _, _ = await api.post("/v1/send", {"targets": "488", "text": "x"}, MON)
    assert status == 200 and phones.texts("488") == ["Alerts: x"]


def test_a_reload_asks_for_a_restart_for_the_listener_and_tokens_not_for_targets():
    from deskbot.service.front import restart_changes

    running = settings()
    assert running.api is not None
    wider = {n: replace(c, targets=None) for n, c in running.api.clients.items()}

    def edited(**change) -> Settings:
        return replace(running, api=replace(running.api, **change))

    assert restart_changes(running, edited(clients=wider)) == []
    assert restart_changes(running, edited(listen="127.0.0.1:9999")) == ["api.listen"]
    assert restart_changes(running, replace(running, api=None)) == ["api"]


async def test_a_client_removed_from_the_config_is_refused_at_once(api_for, phones):
    api = await api_for()
    relay = api.source.relay
    s = settings()
    assert s.api is not None
    clients = {n: c for n, c in s.api.clients.items() if n != "ci"}
    s = replace(s, api=replace(s.api, clients=clients))
    relay.use(relay.directory, Policy.from_settings(s))  # a reload, before any restart
    status, body, _ = await api.post("/v1/send", {"targets": "486", "text": "x"}, CI)
    assert status == 403 and body["error"] == "not-allowed"
    assert phones.sent == []
