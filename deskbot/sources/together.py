"""Refusals of later sends that fire together, answered together.

A sender who planned many sends into one thread (a script, a flood) may see
them refused at their time (rate limits, a lost permission): the thread gets
one answer naming them, not one post per refusal. Each refused send's own
``answer`` returns once that one answer is posted (or raises if it failed),
so every send is still answered exactly once. Anything else (a report, an
answer that is not a refusal) passes straight through.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from deskbot.relay.report import Report
from deskbot.relay.values import Answer, Dispatch
from deskbot.sources.base import Replier

QUIET = 0.75  # seconds without another refusal for the thread before its answer is posted
MOST_WAIT = 10.0  # ...but never later than this after the first one
MOST_IDS = 20  # ids named in the answer; the rest are counted
MOST_REASONS = 5


@dataclass
class _Group:
    replier: Replier
    opened: float
    posted: asyncio.Future[None]
    refused: list[tuple[int, Answer]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Together:
    """The open groups of refusals, one per (chat, place, thread)."""

    def __init__(self, quiet: float = QUIET, most_wait: float = MOST_WAIT):
        self.quiet, self.most_wait = quiet, most_wait
        self._open: dict[tuple[str, str, str], _Group] = {}
        self._posting: set[asyncio.Task[None]] = set()

    def replier(self, thread: tuple[str, str, str], deferred_id: int, inner: Replier) -> Replier:
        return _Member(self, thread, deferred_id, inner)

    async def refused(
        self, thread: tuple[str, str, str], deferred_id: int, answer: Answer, inner: Replier
    ) -> None:
        loop = asyncio.get_running_loop()
        group = self._open.get(thread)
        if group is None:
            group = self._open[thread] = _Group(inner, loop.time(), loop.create_future())
        group.refused.append((deferred_id, answer))
        if group.timer is not None:
            group.timer.cancel()
        wait = min(self.quiet, max(0.0, group.opened + self.most_wait - loop.time()))
        group.timer = loop.call_later(wait, self._close, thread, group)
        await asyncio.shield(group.posted)

    def _close(self, thread: tuple[str, str, str], group: _Group) -> None:
        if self._open.get(thread) is group:
            del self._open[thread]
        task = asyncio.get_running_loop().create_task(self._post(group))
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    @staticmethod
    async def _post(group: _Group) -> None:
        try:
            await group.replier.answer(together(group.refused))
        except Exception as exc:  # each refused send is tried again, as a lone one would be
            group.posted.set_exception(exc)
        else:
            group.posted.set_result(None)


def together(refused: list[tuple[int, Answer]]) -> Answer:
    """One answer for refused later sends: the ids, then each distinct reason once."""
    if len(refused) == 1:
        return refused[0][1]
    ids = ", ".join(str(i) for i, _ in refused[:MOST_IDS])
    more = f" and {len(refused) - MOST_IDS} more" if len(refused) > MOST_IDS else ""
    reasons = list(dict.fromkeys(a.text for _, a in refused))
    lines = [f"{len(refused)} planned sends were not sent (ids {ids}{more}):"]
    lines += [f"• {reason}" for reason in reasons[:MOST_REASONS]]
    if len(reasons) > MOST_REASONS:
        lines.append(f"… and {len(reasons) - MOST_REASONS} other reasons")
    first = refused[0][1]
    return Answer("\n".join(lines), error=True, problem=first.problem)


class _Member:
    """The replier of one refused-or-sent later send, in its thread's group."""

    def __init__(
        self, group: Together, thread: tuple[str, str, str], deferred_id: int, inner: Replier
    ):
        self.group, self.thread, self.id, self.inner = group, thread, deferred_id, inner

    @property
    def waiting_after(self) -> float | None:
        return self.inner.waiting_after

    async def answer(self, answer: Answer) -> None:
        if not answer.error:
            await self.inner.answer(answer)
        else:
            await self.group.refused(self.thread, self.id, answer, self.inner)

    async def waiting(self, job: Dispatch) -> None:
        await self.inner.waiting(job)

    async def report(self, result: Report) -> None:
        await self.inner.report(result)
