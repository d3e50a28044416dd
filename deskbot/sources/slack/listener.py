"""Slack's HTTP mode listener, hardened: the port is open to whoever can reach it.

- Connections are capped (in all and per peer address), and each lives at most
  ``LIFETIME`` seconds: a half-open or slow-loris connection cannot hold the
  listener (Slack's requests take well under a second; keep-alive clients
  simply connect again).
- Bodies are capped at ``MAX_BODY`` bytes; the signature is checked before
  anything parses the body. A rejected request gets 401 (413 when too large)
  and at most one short log line every ``LOG_EVERY`` seconds, never its body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger("deskbot.slack")

MAX_CONNECTIONS = 256
PER_PEER = 32
LIFETIME = 30.0  # seconds a connection may stay open
MAX_BODY = 256 * 1024  # Slack's payloads are a few KB
LOG_EVERY = 10.0  # seconds between log lines about rejected requests

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Guarded(asyncio.Protocol):
    """One connection: counted, and closed when its time is up."""

    def __init__(self, guard: Guard, inner: Any):
        self.guard, self.inner = guard, inner
        self.peer = ""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if peername else ""
        g = self.guard
        if g.open_total >= g.max_connections or g.open_by_peer[self.peer] >= g.per_peer:
            g.refused += 1
            self.peer = ""
            transport.abort()
            return
        g.open_total += 1
        g.open_by_peer[self.peer] += 1
        self.timer = asyncio.get_running_loop().call_later(g.lifetime, transport.abort)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return cast(bool | None, self.inner.eof_received())

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is None:  # refused at connect: the inner handler never saw it
            return
        self.timer.cancel()
        g = self.guard
        g.open_total -= 1
        g.open_by_peer[self.peer] -= 1
        if not g.open_by_peer[self.peer]:
            del g.open_by_peer[self.peer]
        self.inner.connection_lost(exc)


class Guard:
    """Wraps aiohttp's protocol factory with connection caps and lifetimes."""

    def __init__(
        self,
        factory: Callable[[], Any],
        max_connections: int = MAX_CONNECTIONS,
        per_peer: int = PER_PEER,
        lifetime: float = LIFETIME,
    ):
        self.factory = factory
        self.max_connections, self.per_peer, self.lifetime = max_connections, per_peer, lifetime
        self.open_total = 0
        self.open_by_peer: Counter[str] = Counter()
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self, self.factory())


class Rejections:
    """Counts rejected requests; logs one short line at most every LOG_EVERY seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.count = 0
        self._logged_at = -LOG_EVERY
        self._since = 0

    def reject(self, status: int, why: str) -> web.Response:
        self.count += 1
        self._since += 1
        now = self.clock()
        if now - self._logged_at >= LOG_EVERY:
            log.warning("slack: rejected %d request(s) on /slack/events (%s)", self._since, why)
            self._logged_at, self._since = now, 0
        return web.json_response({"ok": False, "error": why}, status=status)


def checked(signing_secret: str, dispatch: Handler) -> Handler:
    """A handler that verifies Slack's signature on the raw body before ``dispatch`` sees it."""
    verifier = SignatureVerifier(signing_secret)
    rejections = Rejections()

    async def handle(request: web.Request) -> web.StreamResponse:
        if (request.content_length or 0) > MAX_BODY:
            return rejections.reject(413, "body too large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return rejections.reject(413, "body too large")
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) < 12):
            return rejections.reject(401, "no valid X-Slack-Request-Timestamp")
        if not verifier.is_valid(body, timestamp, signature):
            return rejections.reject(401, "invalid signature")
        return await dispatch(request)

    handle.rejections = rejections  # type: ignore[attr-defined]
    return handle


async def serve(handler: Handler, host: str, port: int) -> tuple[web.AppRunner, asyncio.Server]:
    """Listen on host:port for POST /slack/events with the caps above."""
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/slack/events", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    server = await asyncio.get_running_loop().create_server(Guard(runner.server), host, port)
    return runner, server
