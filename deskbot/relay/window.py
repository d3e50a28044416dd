"""Sliding-window rate limits."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable


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
