"""Prometheus metrics and the /healthz + /metrics endpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from deskbot.relay import report
from deskbot.senders.base import Outcome
from deskbot.sipuri import split_hostport

log = logging.getLogger("deskbot.health")


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

    def record(self, chat: str, result: report.Report) -> None:
        self.commands.labels(chat).inc()
        for line in result.lines:
            if line.delivery is None:
                self.deliveries.labels("0", "skipped").inc()
                continue
            d = line.delivery
            self.deliveries.labels(str(d.code), d.outcome.value).inc()
            self.latency.observe(d.elapsed_ms / 1000)

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
    ):
        self.listen = listen
        self.metrics = metrics
        self.checks = checks
        self.refresh = refresh
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        host, port = split_hostport(self.listen)
        site = web.TCPSite(self.runner, host.strip("[]"), port or 0)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)  # port 0: learn the one the OS chose
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("health and metrics on http://%s:%d/healthz", host, self.port)

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        status = self.checks()
        return web.json_response(status, status=200 if status["ok"] else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        for refresh in self.refresh:
            refresh()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
