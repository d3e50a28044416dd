"""Prometheus metrics and the /healthz + /metrics endpoint."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from deskbot.relay import report
from deskbot.relay.values import Answer
from deskbot.senders.base import Outcome
from deskbot.sources import http

log = logging.getLogger("deskbot.health")

PHONE_RATE = "phone-rate-limited"  # a phone over per_phone_per_minute was skipped


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.commands = Counter(
            "deskbot_commands", "Send commands carried out", ["chat"], registry=r
        )
        self.deliveries = Counter(
            "deskbot_deliveries",
            "Messages by the phone's final answer",
            ["code", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "deskbot_delivery_seconds",
            "Time from send to the phone's final answer",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 32),
            registry=r,
        )
        self.in_flight = Gauge(
            "deskbot_sends_in_flight", "Messages waiting for an answer", registry=r
        )
        self.agent_restarts = Gauge(
            "deskbot_sip_agent_restarts", "Times the SIP worker was restarted", registry=r
        )
        self.takeovers = Counter(
            "deskbot_takeovers",
            "Commands of a replica that stopped (or of an earlier run) answered by this one",
            registry=self.registry,
        )
        self.reloads = Counter(
            "deskbot_directory_reloads", "Directory reloads", ["result"], registry=r
        )
        self.phone_up = Gauge(
            "deskbot_phone_up",
            "1 if the phone answered the last probe (SIP OPTIONS) with 2xx, else 0",
            ["extension"],
            registry=r,
        )
        # The operator's questions (README "Metrics"); labels stay few: no phone, no person.
        self.routed = Counter(
            "deskbot_deliveries_by_route",
            "Messages by outcome, the phone's format and site (local: this deskbot's SIP agent)",
            ["outcome", "format", "site"],
            registry=r,
        )
        self.command_seconds = Histogram(
            "deskbot_command_seconds",
            "Time from taking a send command to its last phone's answer",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80),
            registry=r,
        )
        self.refusals = Counter(
            "deskbot_refusals",
            "Commands refused before anything was sent, and phones skipped, by problem",
            ["problem"],
            registry=r,
        )
        for problem in ("rate-limited", PHONE_RATE):  # 0 from the start: rate() works at once
            self.refusals.labels(problem)
        self.site_edge_up = Gauge(
            "deskbot_site_edge_up",
            "1 if an edge of the site answered the last ping over NATS, else 0",
            ["site"],
            registry=r,
        )
        self.sync_age = Gauge(
            "deskbot_directory_sync_age_seconds",
            "Seconds since the LDAP directory in use was fetched (0 without [directory.ldap])",
            registry=r,
        )
        self.sync_ok = Gauge(
            "deskbot_directory_sync_ok",
            "0 if the last LDAP sync failed or was refused, else 1",
            registry=r,
        )
        self.sync_ok.set(1)
        self.sync_failures = Counter(
            "deskbot_directory_sync_failures", "LDAP syncs that failed or were refused", registry=r
        )
        self.audit_seconds = Histogram(
            "deskbot_audit_write_seconds",
            "Time of one audit log transaction (a command, answers, the end of a send)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.audit_errors = Counter(
            "deskbot_audit_write_errors", "Audit log transactions that failed", registry=r
        )
        self.api_requests = Counter(
            "deskbot_api_requests",
            "HTTP API and webhook requests by client (-: no valid token) and status code",
            ["client", "code"],
            registry=r,
        )
        # Confirmations (issue 23) go here: deskbot_confirmations_total{outcome}.

    def record(self, chat: str, result: report.Report) -> None:
        self.commands.labels(chat).inc()
        self.command_seconds.observe(result.seconds)
        for line in result.lines:
            if line.delivery is None:
                self.deliveries.labels("0", "skipped").inc()
                self.refusals.labels(PHONE_RATE).inc()
                continue
            d = line.delivery
            self.deliveries.labels(str(d.code), d.outcome.value).inc()
            site = line.phone.site or "local"
            self.routed.labels(d.outcome.value, line.phone.format, site).inc()
            self.latency.observe(d.elapsed_ms / 1000)

    def record_refusal(self, answer: Answer) -> None:
        self.refusals.labels(answer.problem or "other").inc()

    def record_audit_write(self, seconds: float, ok: bool) -> None:
        self.audit_seconds.observe(seconds)
        if not ok:
            self.audit_errors.inc()

    def record_api_request(self, client: str, code: int) -> None:
        self.api_requests.labels(client, str(code)).inc()

    def record_sync(self, applied: bool) -> None:
        self.sync_ok.set(1 if applied else 0)
        if not applied:
            self.sync_failures.inc()

    def record_probe(self, result: report.Report) -> None:
        """The answers of one probe of every phone; phones gone from the directory drop out."""
        self.phone_up.clear()
        for line in result.lines:
            up = line.delivery is not None and line.delivery.outcome is Outcome.DELIVERED
            self.phone_up.labels(line.phone.extension).set(1 if up else 0)


class HealthServer:
    """GET /healthz (JSON; 200 healthy, 503 not) and GET /metrics (Prometheus text)."""

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        checks: Callable[[], dict[str, Any]],
        refresh: Sequence[Callable[[], None]] = (),
        ready: Callable[[], dict[str, Any]] | None = None,
        reload: Callable[[], Awaitable[bool]] | None = None,
        reload_token: str = "",
    ):
        self.listen = listen
        self.metrics = metrics
        self.checks = checks
        self.refresh = refresh
        self.ready = ready or checks  # /-/ready: able to take commands now
        self.reload = reload
        self.reload_token = reload_token
        self.served: http.Listening | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/-/healthy", self._healthy)
        app.router.add_get("/-/ready", self._ready)
        if self.reload is not None:
            app.router.add_post("/-/reload", self._reload)
        # behind the same guard as the API: a flood of idle connections cannot use up the
        # process's descriptors; a probe connects, asks and goes
        self.served = await http.serve(
            app,
            self.listen,
            lifetime=10.0,
            guard={"max_connections": 64, "per_peer": 16, "reserved": 0},
            keepalive_timeout=5.0,
        )
        self.port = self.served.port
        log.info("health and metrics on http://%s:%d/healthz", self.served.host, self.port)

    async def stop(self) -> None:
        served, self.served = self.served, None
        if served is not None:
            await served.stop()

    async def _healthz(self, request: web.Request) -> web.Response:
        status = self.checks()
        return web.json_response(status, status=200 if status["ok"] else 503)

    async def _healthy(self, request: web.Request) -> web.Response:
        return web.json_response({"healthy": True})  # the process serves: alive

    async def _ready(self, request: web.Request) -> web.Response:
        status = self.ready()
        return web.json_response(status, status=200 if status["ok"] else 503)

    async def _reload(self, request: web.Request) -> web.Response:
        """What SIGHUP does; only from loopback, or (with reload_token_env) with the token."""
        if not self._may_reload(request):
            log.warning("POST /-/reload from %s refused", request.remote)
            why = "a bearer token ([health] reload_token_env)" if self.reload_token else "loopback"
            return web.json_response({"reloaded": False, "error": f"needs {why}"}, status=403)
        assert self.reload is not None
        if await self.reload():
            return web.json_response({"reloaded": True})
        error = "config change rejected, the last good directory stays: see the log"
        return web.json_response({"reloaded": False, "error": error}, status=500)

    def _may_reload(self, request: web.Request) -> bool:
        if self.reload_token:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            expected = self.reload_token.encode()
            return scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), expected
            )
        try:
            peer = ipaddress.ip_address(request.remote or "")
        except ValueError:  # a Unix socket, or no peer address at all
            return False
        mapped = getattr(peer, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
        return (mapped or peer).is_loopback

    async def _metrics(self, request: web.Request) -> web.Response:
        for refresh in self.refresh:
            refresh()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
