"""What deskbot serves to phones at ``[desk] url`` (pure): pushed screens under unguessable paths.

Each screen is kept under a random token (128 bits) for one phone, until it
expires; a fetch of it is remembered, so the sender can report that the
phone took its screen. Nothing else is ever served: an unknown or expired
token is a 404, whatever the path. At most ``MAX_SCREENS`` are kept (the
oldest go first), so a flood of sends cannot grow it without bound.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from dataclasses import dataclass, field

MAX_SCREENS = 20_000
PREFIX = "/s/"


@dataclass
class Screen:
    body: bytes
    content_type: str
    extension: str
    expires: float
    fetched: asyncio.Event = field(default_factory=asyncio.Event)
    fetches: int = 0


class Board:
    def __init__(self, url: str, expire: float = 600.0, clock=time.monotonic):
        self.url = url.rstrip("/")
        self.expire = expire
        self.clock = clock
        self._screens: collections.OrderedDict[str, Screen] = collections.OrderedDict()

    def put(self, extension: str, body: bytes, content_type: str) -> tuple[str, Screen]:
        """Keep `body` for the phone; the URL the phone fetches it from, and the entry."""
        self._drop_expired()
        while len(self._screens) >= MAX_SCREENS:
            self._screens.popitem(last=False)
        token = secrets.token_urlsafe(16)
        screen = Screen(body, content_type, extension, self.clock() + self.expire)
        self._screens[token] = screen
        return f"{self.url}{PREFIX}{token}", screen

    def take(self, path: str) -> Screen | None:
        """The screen at `path` (``/s/TOKEN``), marked fetched; None if unknown or expired."""
        if not path.startswith(PREFIX):
            return None
        screen = self._screens.get(path[len(PREFIX) :])
        if screen is None or screen.expires <= self.clock():
            return None
        screen.fetches += 1
        screen.fetched.set()
        return screen

    def __len__(self) -> int:
        return len(self._screens)

    def _drop_expired(self) -> None:
        now = self.clock()
        while self._screens:
            token, oldest = next(iter(self._screens.items()))
            if oldest.expires > now:
                return
            del self._screens[token]
