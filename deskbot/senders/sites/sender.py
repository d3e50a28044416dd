"""The front's sender for phones with a ``site``: the delivery goes to that site's edges.

``send`` asks the site's edges whether one is online (core request-reply: no
edge, no responders, an answer within a second), publishes the delivery to
the site's work queue with ``Nats-Msg-Id`` (a retried publish is dropped by
the server), and waits for the edge's answer on this front's reply subject.
If no answer came within ``take_within`` the front claims the delivery as
expired: when that claim wins, no edge will ever send it ("not sent"); when an
edge's claim won, the edge has started and the front waits for the phone's
answer, which, if it never comes, is "not confirmed".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.kv import KeyValue

from deskbot.directory.snapshot import Phone
from deskbot.loglimit import RateLimitedLog
from deskbot.senders.base import Ask, Cause, Delivery, Health
from deskbot.senders.sip import protocol
from deskbot.senders.sites import seal, wire
from deskbot.settings.schema import Nats

log = logging.getLogger("deskbot.nats")

PING_TIMEOUT = 1.5
ONLINE_FOR = 1.0  # seconds a site's "an edge is online" is believed without asking again
RETRY_CONNECT = 2.0
MARGIN = 2.0  # seconds beyond the edge's SIP timeout for its answer to travel back


class EdgeSender:
    """Sends a site's phones through that site's edges over NATS JetStream."""

    max_body_bytes = protocol.MAX_BODY_BYTES

    def __init__(self, settings: Nats, secret: Callable[[str], str], sip_timeout: float):
        self.settings = settings
        self._secret = secret
        self._sip_timeout = sip_timeout
        self._front = secrets.token_hex(6)  # this process's reply subject
        self._nc: Client | None = None
        self._kv: KeyValue | None = None
        self._waiting: dict[str, asyncio.Future[tuple[int, str, Cause]]] = {}
        self._site_of: dict[str, str] = {}  # job id -> its site: only that site may answer
        self._refused = RateLimitedLog(log)
        self._online: dict[str, float] = {}  # site -> until when it is believed online
        self._pings: dict[str, asyncio.Task[bool]] = {}
        self._connector: asyncio.Task[None] | None = None
        self._error = "not connected yet"
        self._closing = False

    @property
    def timeout(self) -> float:
        return self.settings.take_within + self._sip_timeout + 3.0 + MARGIN

    async def start(self) -> None:
        """Connect in the background: local phones must not wait for (or fail with) NATS."""
        self._connector = asyncio.create_task(self._connect(), name="nats-connect")

    async def wait_connected(self, timeout: float) -> bool:
        """For one-shot sends (``deskbot send``): give NATS a moment before the first send."""
        if self._connector is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._connector), timeout)
        return self._nc is not None

    async def _connect(self) -> None:
        while True:
            nc = None
            try:
                nc = await wire.connect(self.settings, self._secret, f"deskbot-front-{self._front}")
                js = nc.jetstream()
                await wire.ensure_stream(js)
                self._kv = await wire.claims(js)
                await nc.subscribe(wire.REPLY.format(site="*", front=self._front), cb=self._answer)
                self._nc = nc
                log.info("NATS: front connected to %s", self.settings.url)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if nc is not None:  # connected but not usable (JetStream off, not allowed)
                    with contextlib.suppress(Exception):
                        await nc.close()
                if wire.why(exc) != self._error:  # said once, not every two seconds
                    self._error = wire.why(exc)
                    log.warning("NATS %s: %s; trying again", self.settings.url, self._error)
                await asyncio.sleep(RETRY_CONNECT)

    async def close(self) -> None:
        if self._connector:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        for future in self._waiting.values():
            if not future.done():
                future.set_result(
                    (
                        0,
                        "Not confirmed: deskbot stopped before the edge answered",
                        Cause.UNCONFIRMED,
                    )
                )
        if self._nc:
            self._closing = True
            with contextlib.suppress(Exception):
                await self._nc.close()

    def health(self) -> Health:
        connected = bool(self._nc and self._nc.is_connected)
        details: dict[str, Any] = {"connected": connected, "sites_online": sorted(self._online)}
        if not connected:
            details["error"] = self._error if self._nc is None else "reconnecting"
        return Health(connected, {"nats": details}, len(self._waiting))

    async def probe(self, phone: Phone) -> Delivery:
        """A SIP OPTIONS sent by one of the site's edges: a signed question on the site's ping
        subject, answered (signed) with the phone's answer."""
        started = time.perf_counter()
        site = phone.site

        def done(code: int, reason: str, cause: Cause) -> Delivery:
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            return Delivery(phone.uri, code, reason, elapsed, cause)

        nc = self._nc
        if nc is None or not nc.is_connected:
            return done(503, f"site {site} is unreachable ({self._why_down()}): not probed", DOWN)
        key = seal.site_key(self.settings, self._secret, site)
        probe_id = wire.new_job_id()
        wait = self._sip_timeout + MARGIN
        asked = wire.encode_probe(key, site, probe_id, phone.uri, time.time() + wait)
        try:
            msg = await nc.request(wire.PING.format(site=site), asked, timeout=wait)
        except NoRespondersError:
            return done(503, f"site {site} has no edge online: not probed", DOWN)
        except wire.ERRORS:
            return done(0, f"site {site}'s edge did not answer the probe", UNSURE)
        try:
            answered, code, reason, cause = wire.decode_answer(msg.data, key, site)
            if answered != probe_id:
                raise seal.Refused("not the answer to this probe")
        except seal.Refused as exc:  # an edge older than probes answers with its name
            self._refused.warning("NATS: a probe's answer from site %s refused: %s", site, exc)
            return done(0, f"site {site}'s edge gave no signed answer (an older edge?)", UNSURE)
        return done(code, reason, cause)

    def _why_down(self) -> str:
        return "JetStream is off" if self._error == wire.JETSTREAM_OFF else "NATS is not connected"

    async def send(self, phone: Phone, text: str, ask: Ask | None = None) -> Delivery:
        # an edge's screen carries no key yet: its phone stays "waiting" (README, Confirmations)
        started = time.perf_counter()
        site = phone.site

        def done(code: int, reason: str, cause: Cause) -> Delivery:
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            return Delivery(phone.uri, code, reason, elapsed, cause)

        nc, kv = self._nc, self._kv
        if nc is None or kv is None or not nc.is_connected:
            return done(503, f"site {site} is unreachable ({self._why_down()}): not sent", DOWN)
        if not await self._edge_online(nc, site):
            return done(503, f"site {site} has no edge online: not sent", DOWN)
        job_id = wire.new_job_id()
        deadline = time.time() + self.settings.take_within
        give_up = time.monotonic() + self.settings.take_within
        reply = wire.REPLY.format(site=site, front=self._front)
        job = wire.Job(job_id, site, phone.uri, text, deadline, reply, phone.format)
        future = asyncio.get_running_loop().create_future()
        self._waiting[job_id] = future
        self._site_of[job_id] = site
        try:
            headers = {"Nats-Msg-Id": job_id}
            sealed = job.encode(seal.site_key(self.settings, self._secret, site))
            # a publish whose acknowledgement was lost is repeated; the server drops the copy
            while not future.done() and time.monotonic() < give_up:
                try:
                    await nc.jetstream().publish(
                        wire.SEND.format(site=site),
                        sealed,
                        timeout=max(0.1, min(1.0, give_up - time.monotonic())),
                        headers=headers,
                    )
                    break
                except wire.ERRORS:
                    await asyncio.sleep(0.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(future), max(0.0, give_up - time.monotonic()))
            if future.done():
                return done(*future.result())
            try:
                _, holder = await wire.claim(kv, f"{site}.{job_id}", wire.EXPIRED, "front")
            except wire.ERRORS as exc:
                log.warning("NATS: cannot settle delivery %s: %s", job_id, type(exc).__name__)
                return done(
                    0, f"Not confirmed: site {site} did not answer and NATS is unreachable", UNSURE
                )
            if holder == wire.EXPIRED:
                wait = self.settings.take_within
                return done(
                    503, f"site {site}'s edges did not take it within {wait:g} s: not sent", DOWN
                )
            with contextlib.suppress(TimeoutError):  # an edge started it: its phone answers
                await asyncio.wait_for(asyncio.shield(future), self._sip_timeout + 3.0 + MARGIN)
            if future.done():
                return done(*future.result())
            return done(
                0, f"Not confirmed: site {site}'s edge started it but did not answer", UNSURE
            )
        finally:
            self._waiting.pop(job_id, None)
            self._site_of.pop(job_id, None)

    async def _answer(self, msg: Msg) -> None:
        """An edge's answer; only one its job's site signed becomes a report."""
        site = msg.subject.split(".")[2] if msg.subject.count(".") == 3 else ""
        try:
            key = seal.site_key(self.settings, self._secret, site)
            job_id, code, reason, cause = wire.decode_answer(msg.data, key, site)
            if self._site_of.get(job_id) != site:
                raise seal.Refused("not a job of this site that is waiting")
        except seal.Refused as exc:
            self._refused.warning("NATS: an answer on %s refused: %s", msg.subject[:120], exc)
            return
        future = self._waiting.get(job_id)
        if future is not None and not future.done():
            future.set_result((code, reason, cause))

    async def edge_online(self, site: str) -> bool:
        """Whether an edge of the site answers a ping now (/metrics: deskbot_site_edge_up)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return False
        return await self._edge_online(nc, site)

    async def _edge_online(self, nc: Client, site: str) -> bool:
        if self._online.get(site, 0.0) > time.monotonic():
            return True
        task = self._pings.get(site)
        if task is None:  # concurrent sends to one site share one question
            task = self._pings[site] = asyncio.create_task(self._ping(nc, site))
            task.add_done_callback(lambda _: self._pings.pop(site, None))
        return await asyncio.shield(task)

    async def _ping(self, nc: Client, site: str) -> bool:
        try:
            await nc.request(wire.PING.format(site=site), b"", timeout=PING_TIMEOUT)
        except NoRespondersError:
            self._online.pop(site, None)
            return False
        except wire.ERRORS:
            self._online.pop(site, None)
            return False
        self._online[site] = time.monotonic() + ONLINE_FOR
        return True


DOWN, UNSURE = Cause.SITE_DOWN, Cause.UNCONFIRMED
