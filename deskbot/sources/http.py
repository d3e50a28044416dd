"""HTTP listeners open to whoever can reach the port: connection caps and lifetimes.

aiohttp waits for a request's headers for as long as a client takes, so a
few hundred half-open (slow-loris) connections would hold the listener. Each
connection here is counted (in all and per peer address), must send its
first request's headers within ``header_timeout`` seconds and lives at most
``lifetime`` seconds; clients that keep connections alive simply connect again.
The last ``RESERVED`` places are kept for peers that authenticated before
(``Guard.trust``): a flood from elsewhere cannot lock out the monitoring
system. Refusals are counted and logged at most a few times a minute.
``serve`` starts an aiohttp app behind a Guard on a ``host:port`` setting and
gives a ``Listening``, whose ``stop`` ends it the same way for every listener
(the API, the web console, ``[desk]``, the health server).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Collection
from typing import Any, cast

from aiohttp import web

from deskbot.loglimit import RateLimitedLog
from deskbot.sipuri import split_hostport

MAX_CONNECTIONS = 256
PER_PEER = 32
RESERVED = 32  # of MAX_CONNECTIONS, for peers that authenticated before
LIFETIME = 30.0  # seconds a connection may stay open
HEADER_TIMEOUT = 5.0  # seconds until the first request's headers are in
MAX_TRUSTED = 1024  # peer addresses remembered as having authenticated

log = logging.getLogger("deskbot.http")


class _Guarded(asyncio.Protocol):
    """One connection: counted, and closed when its time is up."""

    def __init__(self, guard: Guard, inner: Any):
        self.guard, self.inner = guard, inner
        self.peer = ""
        self.timer: asyncio.TimerHandle | None = None
        self.headers_due: asyncio.TimerHandle | None = None
        self.tail = b""  # the last bytes seen, until the first request's headers ended

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if peername else ""
        g = self.guard
        room = g.max_connections - (0 if self.peer in g.trusted else g.reserved)
        if g.open_total >= room or g.open_by_peer[self.peer] >= g.per_peer:
            g.refused += 1
            g.refusals.warning("http: connections refused on %s: too many open", g.name)
            self.peer = ""
            transport.abort()
            return
        g.open_total += 1
        g.open_by_peer[self.peer] += 1
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(g.lifetime, transport.abort)
        self.headers_due = loop.call_later(g.header_timeout, transport.abort)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.headers_due is not None:
            self.tail = (self.tail + data)[-4096:]
            if b"\r\n\r\n" in self.tail or b"\n\n" in self.tail:
                self.headers_due.cancel()
                self.headers_due, self.tail = None, b""
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
        if self.headers_due is not None:
            self.headers_due.cancel()
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
        header_timeout: float = HEADER_TIMEOUT,
        reserved: int = RESERVED,
        name: str = "",
    ):
        self.factory = factory
        self.max_connections, self.per_peer, self.lifetime = max_connections, per_peer, lifetime
        self.header_timeout, self.reserved, self.name = header_timeout, reserved, name
        self.open_total = 0
        self.open_by_peer: Counter[str] = Counter()
        self.refused = 0
        self.trusted: dict[str, None] = {}  # peers that authenticated, oldest first
        self.refusals = RateLimitedLog(log)

    def __call__(self) -> asyncio.Protocol:
        return _Guarded(self, self.factory())

    def trust(self, peer: str | None) -> None:
        """``peer`` gave valid credentials: it may use the reserved places from now on."""
        if not peer:
            return
        self.trusted.pop(peer, None)
        self.trusted[peer] = None
        if len(self.trusted) > MAX_TRUSTED:
            del self.trusted[next(iter(self.trusted))]


GUARD = web.AppKey("guard", Guard)


async def listen(
    app: web.Application,
    host: str,
    port: int,
    lifetime: float = LIFETIME,
    guard: dict[str, Any] | None = None,
    **runner: Any,
) -> tuple[web.AppRunner, asyncio.Server, int]:
    """Serve ``app`` on host:port behind a Guard; the runner, the server and the port bound.

    The Guard is ``app[GUARD]`` too, for handlers that ``trust`` a peer."""
    gate = Guard(lambda: None, lifetime=lifetime, name=f"{host}:{port}", **(guard or {}))
    app[GUARD] = gate
    app_runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner)
    await app_runner.setup()
    assert app_runner.server is not None
    gate.factory = app_runner.server
    server = await asyncio.get_running_loop().create_server(gate, host, port)
    bound = int(server.sockets[0].getsockname()[1]) if server.sockets else port
    gate.name = f"{host}:{bound}"
    return app_runner, server, bound


class Listening:
    """A listener ``serve`` started: its port, and how it ends."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server, host: str, port: int):
        self.runner, self.server = runner, server
        self.host, self.port = host, port  # the host as the setting has it ([::1]), the port bound

    async def stop(self, sending: Collection[asyncio.Task[Any]] = (), patience: float = 0) -> None:
        """Take no more connections, end those open (aiohttp's shutdown, up to the runner's
        ``shutdown_timeout``), then give the sends already accepted up to ``patience``
        seconds to finish."""
        self.server.close()
        await self.runner.cleanup()
        if sending:
            await asyncio.wait(sending, timeout=patience)


async def serve(
    app: web.Application,
    hostport: str,
    lifetime: float = LIFETIME,
    guard: dict[str, Any] | None = None,
    **runner: Any,
) -> Listening:
    """``listen`` on a ``host:port`` setting (``[::1]:9123``; no port: any free one)."""
    host, port = split_hostport(hostport)
    app_runner, server, bound = await listen(
        app, host.strip("[]"), port or 0, lifetime, guard, **runner
    )
    return Listening(app_runner, server, host, bound)
