"""/metrics answers the operator's questions (README "Metrics"), read from a live deskbot.

`deskbot run` with the HTTP API, a SIPp desk phone, a phone at a site whose edge is not
running (a real nats-server), probes and a tight sender limit; the numbers are what a
Prometheus scrape of /metrics would see after a few API requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DeskbotRun, SippPhone, free_port, until, wait_for, write_config
from nats_server import NatsServer
from peers import die_with_parent
from prometheus_client.parser import text_string_to_metric_families
from slapd_server import Slapd
from test_deploy_grafana import dashboard_queries, rule_queries
from test_ldap import ENV, people_ldif, send, write

from deskbot.directory.snapshot import Phone
from deskbot.relay import report
from deskbot.senders.base import Delivery
from deskbot.senders.sip.agent import SipAgent
from deskbot.service.front import Service
from deskbot.service.health import Metrics
from deskbot.settings.load import load
from deskbot.store.audit import AuditLog

TOKEN = "metrics-token-0123456789"
CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = 2.0
[health]
listen = "127.0.0.1:0"
probe_every = 0.5
[audit]
path = "{tmp}/audit.sqlite3"
[limits]
per_sender_per_minute = 3
[phones.486]
uri = "{phone}"
label = "Reception"
[phones.601]
uri = "sip:601@127.0.0.1:9"
label = "Berlin desk"
site = "berlin"
[nats]
url = "{nats}"
user = "front"
password_env = "DESKBOT_NATS_PASSWORD"
key_env = "DESKBOT_NATS_KEY"
take_within = 1.0
[api]
listen = "127.0.0.1:{api}"
[api.clients.monitoring]
token_env = "DESKBOT_API_TOKEN_MONITORING"
"""


SITE_KEY = "0123456789abcdef" * 4  # signs berlin's jobs and answers (front and edge)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


def post(url: str, body: dict, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def scrape(run: DeskbotRun) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics as Prometheus reads it: sample name -> labels -> value."""
    url = re.findall(r"health and metrics on (http://\S+)/healthz", run.log())[-1] + "/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get(name, {}).get(tuple(sorted(labels.items())))


@pytest.fixture
def live(sipp, hub: NatsServer, tmp_path: Path) -> Iterator[tuple[DeskbotRun, SippPhone, str]]:
    """`deskbot run` as an operator runs it, with the API at the returned base URL."""
    phone = sipp(200)
    port = free_port(socket.SOCK_STREAM)
    body = CONFIG.format(tmp=tmp_path, phone=phone.uri(), nats=hub.url, api=port)
    env = {
        "DESKBOT_API_TOKEN_MONITORING": TOKEN,
        "DESKBOT_NATS_PASSWORD": hub.password("front"),
        "DESKBOT_NATS_KEY": SITE_KEY,
    }
    run = DeskbotRun(write_config(tmp_path / "deskbot.toml", body), env, tmp_path / "run.log")
    run.start()
    try:
        yield run, phone, f"http://127.0.0.1:{port}"
    finally:
        assert run.stop() == 0


def test_a_site_is_up_while_its_edge_answers_and_down_once_it_stops(live, hub, tmp_path):
    run, _phone, _base = live
    berlin = lambda: value(scrape(run), "deskbot_site_edge_up", site="berlin")  # noqa: E731
    wait_for(lambda: berlin() == 0, what="berlin without an edge")
    edge_config = write_config(
        tmp_path / "edge-berlin.toml",
        EDGE.format(nats=hub.url),
    )
    env = {
        **os.environ,
        "DESKBOT_NATS_PASSWORD": hub.password("edge-berlin"),
        "DESKBOT_NATS_KEY": SITE_KEY,
    }
    log = tmp_path / "edge.log"
    edge = subprocess.Popen(
        [str(Path(sys.executable).parent / "deskbot"), "edge", "-c", str(edge_config)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        wait_for(lambda: berlin() == 1, timeout=30, what="berlin's edge to answer pings")
        edge.send_signal(signal.SIGHUP)  # kill -HUP by habit, a log rotation: no stop
        wait_for(lambda: "SIGHUP: nothing of an edge's config reloads live" in log.read_text())
        assert edge.poll() is None and berlin() == 1
    finally:
        edge.terminate()
        assert edge.wait(20) == 0
    wait_for(lambda: berlin() == 0, what="berlin without an edge again")


EDGE = """
[sip]
listen = "127.0.0.1:0"
[health]
listen = "127.0.0.1:0"
[nats]
url = "{nats}"
user = "edge-berlin"
password_env = "DESKBOT_NATS_PASSWORD"
key_env = "DESKBOT_NATS_KEY"
[edge]
site = "berlin"
"""


def traffic(base: str) -> None:
    """What a day brings, in small: sends, a site without edge, no token, a sender too fast."""
    send = f"{base}/v1/send"
    assert post(send, {"targets": "486", "text": "lunch is here"})[0] == 200
    assert post(send, {"targets": "601", "text": "hello Berlin"})[0] == 200  # answered 503
    assert post(send, {"targets": "486", "text": "no token"}, token=None)[0] == 401
    assert post(send, {"targets": "486", "text": "again"})[0] == 200
    assert post(send, {"targets": "486", "text": "one too many"})[0] == 429


def test_metrics_count_deliveries_by_route_api_requests_refusals_and_audit_writes(live):
    run, _phone, base = live
    traffic(base)
    wait_for(lambda: value(scrape(run), "deskbot_site_edge_up", site="berlin") is not None)
    m = scrape(run)
    route = "deskbot_deliveries_by_route_total"
    assert value(m, route, outcome="delivered", format="message", site="local") == 2
    assert sum(v for k, v in m[route].items() if ("site", "berlin") in k) == 1
    assert value(m, route, outcome="delivered", format="message", site="berlin") is None
    assert value(m, "deskbot_command_seconds_count") == 3
    assert value(m, "deskbot_command_seconds_bucket", le="+Inf") == 3
    assert value(m, "deskbot_api_requests_total", client="monitoring", code="200") == 3
    assert value(m, "deskbot_api_requests_total", client="monitoring", code="429") == 1
    assert value(m, "deskbot_api_requests_total", client="-", code="401") == 1
    assert value(m, "deskbot_refusals_total", problem="rate-limited") == 1
    assert value(m, "deskbot_refusals_total", problem="phone-rate-limited") == 0
    assert value(m, "deskbot_site_edge_up", site="berlin") == 0  # no edge runs for berlin
    assert value(m, "deskbot_audit_write_seconds_count") >= 3  # a command, its end, ...
    assert value(m, "deskbot_audit_write_errors_total") == 0
    assert value(m, "deskbot_sip_agent_restarts") == 0
    assert value(m, "deskbot_directory_sync_ok") == 1  # no [directory.ldap]: nothing failing
    assert value(m, "deskbot_directory_sync_age_seconds") == 0
    wait_for(lambda: value(scrape(run), "deskbot_phone_up", extension="601") == 0)  # probed


def test_a_phone_over_its_limit_counts_as_a_phone_rate_refusal():
    """The relay's answer to a phone over per_phone_per_minute, as the metrics see it."""
    metrics = Metrics()
    phone = Phone("486", "sip:486@127.0.0.1:9", "Reception")
    ok = Delivery("sip:486@127.0.0.1:9", 200, "OK", 12.0)
    lines = [report.Line(phone, ok), report.Line(phone, None, "486 got 10 messages")]
    metrics.record("slack", report.Report(True, lines, seconds=0.3))
    sample = metrics.registry.get_sample_value
    assert sample("deskbot_refusals_total", {"problem": "phone-rate-limited"}) == 1
    assert sample("deskbot_command_seconds_sum") == pytest.approx(0.3)


def test_an_audit_log_that_cannot_write_counts_an_error(tmp_path: Path):
    metrics = Metrics()
    audit = AuditLog(tmp_path / "audit.sqlite3")
    audit.on_write.append(metrics.record_audit_write)
    audit.answered("key-1")
    audit.db.execute("DROP TABLE answered")  # the store breaks under deskbot
    audit.answered("key-2")  # logged, not raised: the chat already has its answer
    sample = metrics.registry.get_sample_value
    assert sample("deskbot_audit_write_seconds_count") == 2
    assert sample("deskbot_audit_write_errors_total") == 1
    audit.close()


async def test_a_failing_ldap_sync_shows_in_the_sync_metrics(
    own_slapd: Slapd, sipp, tmp_path: Path
):
    pbx = sipp(200)
    own_slapd.add(people_ldif(own_slapd.subtree()))
    cfg = load(write(tmp_path, own_slapd, "dc=example,dc=com", pbx.port, refresh=1), ENV)
    service = Service(cfg, SipAgent(cfg.settings.sip), sources=[])
    runner = asyncio.create_task(service.run())
    sample = service.metrics.registry.get_sample_value
    try:
        await until(lambda: "alice" in service.relay.directory.people, what="the first sync")
        assert sample("deskbot_directory_sync_ok") == 1
        own_slapd.stop()
        await until(lambda: sample("deskbot_directory_sync_ok") == 0, what="a failed sync")
        assert sample("deskbot_directory_sync_failures_total") >= 1
        aged = lambda: service._refresh_gauges() or sample("deskbot_directory_sync_age_seconds")  # noqa: E731
        await until(lambda: aged() >= 1, what="the directory to age")
        assert (await send(service, "@sales-team still here")).endswith("2/2 delivered")
    finally:
        service.stopping.set()
        await asyncio.wait_for(runner, 20)


def test_every_metric_the_rules_and_the_dashboard_use_is_served_by_deskbot_run(live):
    run, _phone, base = live
    traffic(base)
    used = set()
    for query in rule_queries() + dashboard_queries():
        used |= set(re.findall(r"\b(deskbot_[a-z0-9_]+)", query))
    assert len(used) >= 15
    wait_for(lambda: value(scrape(run), "deskbot_site_edge_up", site="berlin") is not None)
    wait_for(lambda: "deskbot_phone_up" in scrape(run), what="the first probe round")
    served = set(scrape(run))
    assert used - served == set()  # `up` is Prometheus's own, not deskbot's
