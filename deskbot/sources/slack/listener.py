"""Slack's HTTP mode listener, hardened: the port is open to whoever can reach it.

- Connections are capped and short-lived (``sources.http``): a half-open or
  slow-loris connection cannot hold the listener.
- Bodies are capped at ``MAX_BODY`` bytes; the signature is checked before
  anything parses the body. A peer whose signature verified may use the
  listener's reserved places from then on, as an API client with a good
  token. A rejected request gets 401 (413 when too large) and at most one
  short log line every ``LOG_EVERY`` seconds, never its body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from deskbot.sources import http

log = logging.getLogger("deskbot.slack")

MAX_BODY = 256 * 1024  # Slack's payloads are a few KB
LOG_EVERY = 10.0  # seconds between log lines about rejected requests

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
        guard = request.app.get(http.GUARD)
        if guard is not None:  # Slack, by its signature: the reserved places are its too
            guard.trust(request.remote)
        return await dispatch(request)

    handle.rejections = rejections  # type: ignore[attr-defined]
    return handle


async def serve(handler: Handler, host: str, port: int) -> tuple[web.AppRunner, asyncio.Server]:
    """Listen on host:port for POST /slack/events."""
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/slack/events", handler)
    runner, server, _port = await http.listen(app, host, port)
    return runner, server
