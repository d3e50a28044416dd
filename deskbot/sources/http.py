"""HTTP listeners open to whoever can reach the port: connection caps and lifetimes.

aiohttp waits for a request's headers for as long as a client takes, so a
few hundred half-open (slow-loris) connections would hold the listener. Each
connection here is counted (in all and per peer address) and lives at most
``lifetime`` seconds; clients that keep connections alive simply connect again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

MAX_CONNECTIONS = 256
PER_PEER = 32
LIFETIME = 30.0  # seconds a connection may stay open


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


async def listen(
    app: web.Application,
    host: str,
    port: int,
    lifetime: float = LIFETIME,
    per_peer: int = PER_PEER,
    **runner: Any,
) -> tuple[web.AppRunner, asyncio.Server, int]:
    """Serve ``app`` on host:port behind a Guard; the runner, the server and the port bound."""
    app_runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner)
    await app_runner.setup()
    assert app_runner.server is not None
    server = await asyncio.get_running_loop().create_server(
        Guard(app_runner.server, per_peer=per_peer, lifetime=lifetime), host, port
    )
    bound = int(server.sockets[0].getsockname()[1]) if server.sockets else port
    return app_runner, server, bound
