"""Sliding-window rate limits: in memory (one process), or counted in the shared store."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Protocol

from deskbot.store.base import AuditError, CommandLog

log = logging.getLogger("deskbot.relay")


class Window(Protocol):
    limit: int

    def take(self, keys: list[str], tag: str = "") -> dict[str, float]:
        """A slot for each key that has one free (0), else the seconds until one is."""
        ...

    def give_back(self, tag: str) -> None:
        """The slots taken with ``tag``: its command was another replica's after all."""
        ...

    def retry_after(self, key: str) -> float:
        """A look without taking: seconds until one more fits (0 when it fits, or unknown)."""
        ...


class SlidingWindow:
    """At most ``limit`` events per key in any ``window`` seconds."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        self.limit, self.window, self.clock = limit, window, clock
        self.events: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )

    def retry_after(self, key: str) -> float:
        """Seconds until one more event fits; 0 when it fits now."""
        now = self.clock()
        q = self.events[key]
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) < self.limit:
            return 0.0
        return q[len(q) - self.limit] + self.window - now

    def add(self, key: str) -> None:
        self.events[key].append(self.clock())

    def give_back(self, tag: str) -> None:
        pass  # one process: its commands are its own

    def take(self, keys: list[str], tag: str = "") -> dict[str, float]:
        waits: dict[str, float] = {}
        for key in dict.fromkeys(keys):
            waits[key] = self.retry_after(key)
            if waits[key] == 0:
                self.add(key)
        return waits


class SharedWindow:
    """The same limit counted in the store that replicas share: a limit holds across them.

    If the store cannot count, this replica counts alone (in memory) until it can:
    a limit is a courtesy to the phones, not a reason to refuse an alert.
    """

    def __init__(self, store: CommandLog, name: str, limit: int, window: float = 60.0):
        self.store, self.name, self.limit, self.window = store, name, limit, window
        self.alone = SlidingWindow(limit, window)

    def retry_after(self, key: str) -> float:
        """The shared count's wait, read without taking a slot (``take`` decides later)."""
        try:
            return self.store.slot_wait(f"{self.name}:{key}", self.limit, self.window)
        except AuditError as exc:
            log.warning("%s: counting %s limits in this replica alone", exc, self.name)
            self.alone.limit = self.limit
            return self.alone.retry_after(key)

    def give_back(self, tag: str) -> None:
        if tag:
            self.store.give_back(f"{self.store.replica}:{self.name}:{tag}")

    def take(self, keys: list[str], tag: str = "") -> dict[str, float]:
        named = {f"{self.name}:{key}": key for key in keys}
        mine = f"{self.store.replica}:{self.name}:{tag}" if tag else ""
        try:
            waits = self.store.take_slots(list(named), self.limit, self.window, mine)
        except AuditError as exc:
            log.warning("%s: counting %s limits in this replica alone", exc, self.name)
            self.alone.limit = self.limit
            return self.alone.take(keys)
        return {named[k]: wait for k, wait in waits.items()}
