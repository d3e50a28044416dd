"""The ``[desk]`` endpoint: what phones fetch from deskbot (Cisco screens, confirm keys), no more.

Open to whoever reaches the port, so it is hardened like the API listener:
connection caps and lifetimes (``sources.http``), GET and HEAD only, no
request body, a short path, no directory listing. A path is a screen's
unguessable token from ``senders.http.board``; anything else, an expired
token included, is the same bare 404. A confirm key's GET (``/c/TOKEN``) goes
to the relay's ``Confirmer`` and is answered "Thank you" in the phone's XML;
misses (any 404) are limited per address, and no path is ever logged. In
``deskbot run`` it is a source
(it takes no commands), and ``deskbot send`` runs it for the duration of a send.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from deskbot.relay.confirm import PREFIX, Confirmer
from deskbot.relay.window import SlidingWindow
from deskbot.senders.http.board import Board
from deskbot.senders.screens import thanks
from deskbot.settings.schema import Desk
from deskbot.sources import http

log = logging.getLogger("deskbot.desk")

MAX_PATH = 128
LIFETIME = 10.0  # seconds a phone's connection may stay open
MAX_ADDRESSES = 10_000  # addresses whose misses are counted at once
MISSES_PER_MINUTE = 30  # 404s one address may cause; then 429 until the minute has passed
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class DeskSource:
    name = "desk"

    def __init__(self, desk: Desk, board: Board | None, confirmer: Confirmer | None = None):
        self.desk = desk
        self.board = board
        self.confirmer = confirmer
        self.misses = SlidingWindow(MISSES_PER_MINUTE)
        self.port = 0
        self.served: http.Listening | None = None

    @property
    def connected(self) -> bool:
        return self.served is not None

    async def start(self) -> None:
        app = web.Application(client_max_size=1024, handler_args={"max_line_size": 1024})
        app.router.add_route("*", "/{tail:.*}", self._serve)
        try:
            self.served = await http.serve(app, self.desk.listen, lifetime=LIFETIME)
            self.port = self.served.port
        except OSError as exc:
            raise RuntimeError(
                f"cannot listen on [desk] listen {self.desk.listen}: {exc}"
            ) from None
        log.info("desk endpoint on port %d for %s", self.port, self.desk.url)

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def stop(self) -> None:
        served, self.served = self.served, None
        if served is not None:
            await served.stop()

    async def notify_admins(self, text: str) -> None:
        pass

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, headers={**HEADERS, "Allow": "GET, HEAD"})
        path = request.raw_path.partition("?")[0]
        remote = request.remote or ""
        wait = self.misses.retry_after(remote)
        if wait > 0:
            return web.Response(status=429, headers={**HEADERS, "Retry-After": str(int(wait) + 1)})
        if len(path) > MAX_PATH:
            return self._miss(remote)
        if path.startswith(PREFIX):
            return self._press(path, remote)
        screen = self.board.take(path) if self.board is not None else None
        if screen is None:
            return self._miss(remote)
        log.debug("phone %s fetched its screen", screen.extension)
        return web.Response(
            body=screen.body, headers={**HEADERS, "Content-Type": screen.content_type}
        )

    def _miss(self, remote: str) -> web.Response:
        self.misses.add(remote)
        events = self.misses.events
        if len(events) > MAX_ADDRESSES:  # many addresses: forget those quiet for a minute
            now = self.misses.clock()
            for quiet in [k for k, q in events.items() if not q or q[-1] <= now - 60]:
                del events[quiet]
        return web.Response(status=404, headers=HEADERS)

    def _press(self, path: str, remote: str) -> web.Response:
        found = self.confirmer.press(path, remote) if self.confirmer is not None else None
        if found is None:
            return self._miss(remote)
        body, content_type = thanks.page(found.format)
        return web.Response(body=body, headers={**HEADERS, "Content-Type": content_type})
