"""``deskbot edge``: one office's SIP sender, taking that site's deliveries from NATS.

It connects out (an office firewall lets nothing in), answers the site's
"is an edge online?" question while its SIP agent is alive, pulls from the
site's durable consumer (shared with the site's other edges), and for each
delivery: checks the deadline and the URI, claims it (create-if-absent in
the claims bucket) *before* sending, sends it through the supervised pjsua2
worker, publishes the phone's answer to the front's reply subject, and acks.
A delivery whose claim is already held was started before (this edge or a
sibling crashed): it is answered "not confirmed" and never sent twice. The
edge needs no directory: the URI travels with the delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from typing import Any

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from deskbot import sipuri
from deskbot.directory.snapshot import Phone
from deskbot.loglimit import RateLimitedLog
from deskbot.senders.base import Cause, Delivery, Sender, SenderError
from deskbot.senders.sites import seal, wire
from deskbot.service.health import HealthServer, Metrics
from deskbot.settings.schema import Config

log = logging.getLogger("deskbot.edge")

FETCH_WAIT = 1.0  # seconds one pull waits for deliveries
RETRY = 1.0  # seconds before pulling again after NATS went away
KEEP_EVERY = wire.ACK_WAIT / 3  # in_progress() while the phone answers


class EdgeStartError(RuntimeError):
    """The edge could not start; the message says what and why."""


class Edge:
    def __init__(self, cfg: Config, agent: Sender):
        s = cfg.settings
        assert s.edge is not None and s.nats is not None
        self.cfg = cfg
        self.site = s.edge.site
        self.nats_settings = s.nats
        self.key = seal.site_key(s.nats, cfg.secret, self.site)
        self.refused = RateLimitedLog(log)
        self.agent = agent
        self.name = f"{socket.gethostname()}-{os.getpid()}"
        self.stopping = asyncio.Event()
        self.slots = asyncio.Semaphore(s.sip.max_in_flight)
        self.free = s.sip.max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._probing: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.nc: Client | None = None
        # the image's HEALTHCHECK asks this: SIP agent alive and NATS connected
        self.metrics = Metrics()
        self.health = HealthServer(
            s.health.listen, self.metrics, self.status, refresh=[self._refresh_gauges]
        )

    def _refresh_gauges(self) -> None:
        health = self.agent.health()
        self.metrics.in_flight.set(health.in_flight)
        self.metrics.agent_restarts.set(health.restarts)

    def status(self) -> dict[str, Any]:
        sip = self.agent.health()
        connected = self.nc is not None and self.nc.is_connected
        return {
            "ok": sip.alive and connected,
            "sip": sip.details,
            "nats": {"connected": connected, "site": self.site},
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        # a habit from `deskbot run` (or a log rotation) must not end an edge
        loop.add_signal_handler(signal.SIGHUP, _no_reload)
        try:
            await self.agent.start()
        except SenderError as exc:
            raise EdgeStartError(
                f"the SIP agent on {self.cfg.settings.sip.listen}: {exc}"
            ) from None
        try:
            try:
                await self.health.start()
            except OSError as exc:
                raise EdgeStartError(
                    f"the health endpoint on {self.cfg.settings.health.listen}: "
                    f"{exc.strerror or exc}"
                ) from None
            nc = self.nc = await self._connect()
            if nc is None:
                return
            consuming = await self._consume(nc.jetstream())
            if consuming is None:  # stopped before NATS could be used
                with contextlib.suppress(Exception):
                    await nc.close()
                return
            kv, psub = consuming
            await nc.subscribe(wire.PING.format(site=self.site), queue="edges", cb=self._pong)
            log.info("edge of site %s ready (%s)", self.site, self.name)
            await self._pull(psub, kv, nc)
            if self._tasks:  # let the phones answer what was started
                await asyncio.wait(self._tasks, timeout=self.agent.timeout + 1.0)
            with contextlib.suppress(Exception):
                await nc.close()
        finally:
            await self.health.stop()
            await self.agent.close()

    async def _connect(self) -> Client | None:
        """NATS, retried until it answers: an edge may boot before the WAN is up."""
        said = ""
        while not self.stopping.is_set():
            try:
                return await wire.connect(
                    self.nats_settings,
                    self.cfg.secret,
                    f"deskbot-edge-{self.site}-{self.name}",
                    inbox=f"_INBOX_{self.site}",
                )
            except Exception as exc:
                if wire.why(exc) != said:  # once per reason
                    said = wire.why(exc)
                    log.warning("NATS %s: %s; trying again", self.nats_settings.url, said)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), RETRY * 2)
        return None

    async def _consume(
        self, js: JetStreamContext
    ) -> tuple[KeyValue, JetStreamContext.PullSubscription] | None:
        said = ""
        while not self.stopping.is_set():
            try:
                await wire.ensure_stream(js)
                kv = await wire.claims(js)
                psub = await js.pull_subscribe(
                    wire.SEND.format(site=self.site),
                    durable=wire.consumer(self.site),
                    stream=wire.STREAM,
                    config=api.ConsumerConfig(
                        ack_policy=api.AckPolicy.EXPLICIT,
                        ack_wait=wire.ACK_WAIT,
                        max_deliver=wire.MAX_DELIVER,
                        deliver_policy=api.DeliverPolicy.ALL,
                    ),
                )
                return kv, psub
            except wire.ERRORS as exc:
                if wire.why(exc) != said:  # once per reason, not once a second forever
                    said = wire.why(exc)
                    log.error("NATS: cannot set up site %s: %s; trying again", self.site, said)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), RETRY * 2)
        return None

    async def _pong(self, msg: Msg) -> None:
        """ "Is an edge online?" (no body), or a probe of one phone (signed, see ``_probe``)."""
        if not self.agent.health().alive or self.stopping.is_set():
            return
        if not msg.data:
            with contextlib.suppress(Exception):
                await msg.respond(self.name.encode())
            return
        if len(self._probing) >= self.cfg.settings.sip.max_in_flight:  # bounded, like sends
            self.refused.warning("site %s: too many probes at once; one not answered", self.site)
            return
        task = asyncio.create_task(self._probe(msg))  # not in the subscription's own turn
        self._probing.add(task)
        task.add_done_callback(self._probing.discard)

    async def _probe(self, msg: Msg) -> None:
        """A SIP OPTIONS to a phone of this site, for a probe the site's key signed."""
        try:
            probe_id, uri = wire.decode_probe(msg.data, self.key, self.site, time.time())
        except seal.Refused as exc:  # forged, altered, another site's, too late: not probed
            self.refused.warning("site %s: a probe refused, not sent: %s", self.site, exc)
            return
        if sipuri.is_valid(uri):
            delivery = await self.agent.probe(Phone("", uri, site=self.site))
        else:
            refused = "Not probed: the edge takes only valid sip: URIs"
            delivery = Delivery(uri, 400, refused, 0.0, Cause.TRANSPORT)
        with contextlib.suppress(*wire.ERRORS):
            await msg.respond(wire.encode_answer(self.key, self.site, probe_id, delivery))

    async def _pull(
        self, psub: JetStreamContext.PullSubscription, kv: KeyValue, nc: Client
    ) -> None:
        while not self.stopping.is_set():
            if self.free <= 0:
                await self.slots.acquire()  # wait for a slot, then give it back to the count
                self.slots.release()
                continue
            try:
                msgs = await psub.fetch(batch=self.free, timeout=FETCH_WAIT)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except wire.ERRORS as exc:
                log.debug("NATS pull: %s", exc or type(exc).__name__)
                await asyncio.sleep(RETRY if not nc.is_connected else 0.1)
                continue
            for msg in msgs:
                self.free -= 1
                await self.slots.acquire()
                task = asyncio.create_task(self._deliver(msg, kv, nc))
                self._tasks.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.free += 1
        self.slots.release()
        if not task.cancelled() and task.exception():
            log.error("edge delivery failed", exc_info=task.exception())

    async def _deliver(self, msg: Msg, kv: KeyValue, nc: Client) -> None:
        try:
            job = wire.Job.decode(msg.data, self.key, self.site, time.time())
        except seal.Refused as exc:  # forged, altered, another site's, or malformed: never sent
            self.refused.warning("site %s: a delivery refused, not sent: %s", self.site, exc)
            with contextlib.suppress(*wire.ERRORS):
                await msg.term()
            return
        key = f"{self.site}.{job.id}"

        async def answer(d: Delivery) -> None:
            with contextlib.suppress(*wire.ERRORS):
                await nc.publish(job.reply, wire.encode_answer(self.key, self.site, job.id, d))

        if not sipuri.is_valid(job.uri):
            refused = "Not sent: the edge takes only valid sip: URIs"
            await answer(Delivery(job.uri, 400, refused, 0.0, Cause.TRANSPORT))
            await msg.term()
            return
        # too late: the front answered "not sent", or is about to
        late = time.time() > job.deadline
        claimed = await self._claim(kv, key, wire.EXPIRED if late else wire.STARTED)
        if claimed is None:  # NATS is away: the delivery comes again, or expires
            return
        won, holder = claimed
        if holder == wire.EXPIRED:
            with contextlib.suppress(*wire.ERRORS):
                await msg.term()
            return
        if not won:
            log.warning(
                "site %s: delivery %s was started before; not sent again", self.site, job.id
            )
            why = f"Not confirmed: an edge of site {self.site} restarted while the message was out"
            await answer(Delivery(job.uri, 0, why, 0.0, Cause.UNCONFIRMED))
            with contextlib.suppress(*wire.ERRORS):
                await msg.ack()
            return
        keep = asyncio.create_task(self._keep(msg))
        try:
            phone = Phone("", job.uri, format=job.format, site=self.site)
            delivery = await self.agent.send(phone, job.text)
        finally:
            keep.cancel()
        self.sent += 1
        log.info("site %s: delivery %s: %d %s", self.site, job.id, delivery.code, delivery.reason)
        await answer(delivery)
        with contextlib.suppress(*wire.ERRORS):
            await msg.ack()

    async def _claim(self, kv: KeyValue, key: str, what: bytes) -> tuple[bool, bytes] | None:
        try:
            return await wire.claim(kv, key, what, self.name)
        except wire.ERRORS as exc:
            log.warning("NATS: cannot claim %s: %s", key, exc or type(exc).__name__)
            return None

    async def _keep(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(KEEP_EVERY)
            with contextlib.suppress(*wire.ERRORS):
                await msg.in_progress()


def run(cfg: Config) -> None:
    from deskbot.senders.sip.agent import SipAgent

    async def main() -> None:
        s = cfg.settings
        password = cfg.secret(s.sip.registrar.password_env) if s.sip.registrar else None
        await Edge(cfg, SipAgent(s.sip, password)).run()

    asyncio.run(main())


def _no_reload() -> None:
    log.warning("SIGHUP: nothing of an edge's config reloads live; restart it to apply changes")
