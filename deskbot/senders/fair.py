"""Send slots shared fairly between commands.

One command's slow or silent phones must not starve another's: a command
may hold at most ``total - reserve`` slots, so a few are always left for
the others, and a freed slot goes to the waiting commands in turn (round
robin), not to whichever command queued the most sends. Which command a
send belongs to is the ``COMMAND`` context variable, set by the relay for
each fan-out (every send task of one ``gather`` inherits it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
from collections.abc import Hashable

COMMAND: contextvars.ContextVar[Hashable] = contextvars.ContextVar("deskbot_command", default=None)


class FairSlots:
    def __init__(self, total: int, reserve: int | None = None):
        self.total = total
        reserve = max(1, total // 5) if reserve is None else reserve
        self.cap = max(1, total - reserve)  # the most one command holds at once
        self.free = total
        self.held: collections.Counter[Hashable] = collections.Counter()
        self.queues: dict[Hashable, collections.deque[asyncio.Future[None]]] = {}
        self._turn: collections.deque[Hashable] = collections.deque()  # round-robin order

    async def acquire(self) -> Hashable:
        """A slot for the current command; give it back with ``release(key)`` (no async
        context manager: on a broadcast it cost more than the rest of a send)."""
        key = COMMAND.get()
        await self._acquire(key)
        return key

    async def _acquire(self, key: Hashable) -> None:
        if self.free > 0 and self.held[key] < self.cap and not self.queues.get(key):
            self._take(key)
            return
        waiter = asyncio.get_running_loop().create_future()
        if key not in self.queues:
            self.queues[key] = collections.deque()
            self._turn.append(key)
        self.queues[key].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # granted as we were cancelled: give it back
            else:
                self._forget(key, waiter)
            raise

    def _take(self, key: Hashable) -> None:
        self.free -= 1
        self.held[key] += 1

    def release(self, key: Hashable) -> None:
        self.free += 1
        self.held[key] -= 1
        if self.held[key] <= 0:
            del self.held[key]
        self._grant()

    def _grant(self) -> None:
        """Give free slots to waiting commands, one each in turn."""
        passes = len(self._turn)
        while self.free > 0 and self._turn and passes > 0:
            key = self._turn[0]
            self._turn.rotate(-1)
            queue = self.queues[key]
            if self.held[key] >= self.cap:
                passes -= 1
                continue
            passes = len(self._turn)
            waiter = queue.popleft()
            if not queue:
                del self.queues[key]
                self._turn.remove(key)
            self._take(key)
            waiter.set_result(None)

    def _forget(self, key: Hashable, waiter: asyncio.Future[None]) -> None:
        queue = self.queues.get(key)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self.queues[key]
            self._turn.remove(key)
