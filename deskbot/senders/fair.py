"""Send slots shared fairly between commands, and never idle for a lone command.

A command alone may fill every one of the ``total`` slots (a broadcast
nobody else waits for is not held back). A fifth more (``reserve``) stand
beside them for the others: a command holding fewer than ``reserve`` slots
may take one of these when the ``total`` are all busy, so another command's
one-phone send leaves at once even while a broadcast to silent phones holds
every slot until its timeout. While others wait, a command gets a freed slot
only while it holds fewer than ``total - reserve``, and freed slots go to the
waiting commands in turn (round robin), not to whichever command queued the
most sends. Which command a send belongs to is the ``COMMAND`` context
variable, set by the relay for each fan-out (every send task of one
``gather`` inherits it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
from collections.abc import Hashable
from typing import Protocol

COMMAND: contextvars.ContextVar[Hashable] = contextvars.ContextVar("deskbot_command", default=None)


class Waiter(Protocol):
    def done(self) -> bool: ...

    def set_result(self, result: None, /) -> None: ...


class FairSlots:
    def __init__(self, total: int, reserve: int | None = None):
        self.total = total
        self.reserve = max(1, total // 5) if reserve is None else reserve
        self.cap = max(1, total - self.reserve)  # the most one command gets while others wait
        self.used = 0
        self.held: dict[Hashable, int] = {}
        self.queues: dict[Hashable, collections.deque[Waiter]] = {}
        self._turn: collections.deque[Hashable] = collections.deque()  # round-robin order
        self._granting = False

    @property
    def most(self) -> int:
        """The most in flight at once: every slot and the reserve."""
        return self.total + self.reserve

    @property
    def free(self) -> int:
        """Slots of the ``total`` nobody holds (the reserve not counted)."""
        return max(0, self.total - self.used)

    async def acquire(self) -> Hashable:
        """A slot for the current command; give it back with ``release(key)`` (no async
        context manager: on a broadcast it cost more than the rest of a send)."""
        key = COMMAND.get()
        if self.take(key):
            return key
        waiter = asyncio.get_running_loop().create_future()
        self.enqueue(key, waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # granted as we were cancelled: give it back
            else:
                self.forget(key, waiter)
            raise
        return key

    def take(self, key: Hashable) -> bool:
        """A slot for `key` now if one is its to take (nobody of `key` is queued before it)."""
        if key in self.queues or not self._may(self.held.get(key, 0), bool(self.queues)):
            return False
        self.used += 1
        self.held[key] = self.held.get(key, 0) + 1
        return True

    def enqueue(self, key: Hashable, waiter: Waiter) -> None:
        """Queue `waiter` for a slot: ``waiter.set_result(None)`` once it holds one, unless
        ``waiter.done()`` by then (it went away). An asyncio future is such a waiter."""
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = collections.deque()
            self._turn.append(key)
        queue.append(waiter)

    def _may(self, held: int, others_wait: bool) -> bool:
        """May a command holding `held` slots take one more now?"""
        if self.used < self.total:
            return held < self.cap or not others_wait
        return self.used < self.total + self.reserve and held < self.reserve

    def release(self, key: Hashable) -> None:
        self.used -= 1
        held = self.held[key] - 1
        if held:
            self.held[key] = held
        else:
            del self.held[key]
        turn = self._turn
        if not turn or self._granting:  # a release by a waiter being granted: the loop
            return  # of _grant goes on (no recursion through a long queue)
        if len(turn) > 1:
            self._grant()
            return
        # one command waits (a broadcast alone): the freed slot is its own, no turns
        key = turn[0]
        queue = self.queues[key]
        self._granting = True
        try:
            while queue and self._may(self.held.get(key, 0), False):
                waiter = queue.popleft()
                if waiter.done():
                    continue
                self.used += 1
                self.held[key] = self.held.get(key, 0) + 1
                waiter.set_result(None)
        finally:
            self._granting = False
        if not queue and self.queues.get(key) is queue:
            del self.queues[key]
            turn.remove(key)

    def _grant(self) -> None:
        """Give slots to waiting commands, one each in turn, while any may take one."""
        turn, queues, held = self._turn, self.queues, self.held
        passes = len(turn)
        self._granting = True
        try:
            while turn and passes > 0:
                key = turn[0]
                queue = queues[key]
                if not self._may(held.get(key, 0), len(queues) > 1):
                    turn.rotate(-1)
                    passes -= 1
                    continue
                waiter = queue.popleft()
                if queue:
                    turn.rotate(-1)
                else:
                    del queues[key]
                    turn.popleft()
                passes = len(turn)
                if waiter.done():  # it went away (cancelled): it takes nothing
                    continue
                self.used += 1
                held[key] = held.get(key, 0) + 1
                waiter.set_result(None)
        finally:
            self._granting = False

    def forget(self, key: Hashable, waiter: Waiter) -> None:
        """`waiter` no longer wants a slot."""
        queue = self.queues.get(key)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(waiter)
        if not queue:
            del self.queues[key]
            self._turn.remove(key)

    def drop_gone(self, key: Hashable) -> None:
        """Take every waiter of `key` that is ``done()`` (gone) out of its queue at once."""
        queue = self.queues.get(key)
        if queue is None:
            return
        queue = self.queues[key] = collections.deque(w for w in queue if not w.done())
        if not queue:
            del self.queues[key]
            self._turn.remove(key)
