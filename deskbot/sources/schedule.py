"""The clock as a source: deferred sends whose time has come, and `[schedules]` occurrences.

Each firing is a ``Request`` through ``serve``, like a chat command, with a
durable key: ``deferred:ID`` for a planned send, ``schedule:NAME:ISO-TIME``
for an occurrence. The relay records the key before any phone gets the text,
so a restart never fires one twice; the request's ``sent_at`` is its planned
time, so one missed while deskbot was down for longer than ``[message]
max_age`` is answered "not sent" instead of being sent late.

A deferred send is answered in the thread of the command that planned it:
the source that took that command rebuilds a replier from what the store
kept (``Replies.replier_for``). A schedule's run is posted to its
``report_to`` place, or only logged.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Callable, Mapping

from deskbot import notices
from deskbot.relay import report
from deskbot.relay.relay import Relay
from deskbot.relay.values import SCHEDULE, Answer, ChatUser, Dispatch, Request
from deskbot.settings.schema import Schedule
from deskbot.sources.base import Replier, Replies
from deskbot.sources.serve import serve
from deskbot.sources.together import Together
from deskbot.store.base import Deferred, LaterSends

log = logging.getLogger("deskbot.schedule")

TICK = 0.5  # seconds between looks at the clock
RETRY = 30.0  # seconds before a send whose answer failed is tried again (answered from the log)
CATCH_UP = 60.0  # seconds looked back at start when max_age is off
LOOK_BACK = 7 * 86400.0  # at most this far back to the last time the schedules ran
MARK_EVERY = 30.0  # seconds between notes of "handled up to" in the store
MAX_FIRING = 50  # later sends started at once; more due wait for the next tick


class LogReplier:
    """Where nobody reads the answer: it goes to deskbot's log (never the text)."""

    waiting_after = None

    def __init__(self, what: str):
        self.what = what

    async def answer(self, answer: Answer) -> None:
        level = logging.WARNING if answer.error else logging.INFO
        log.log(level, "%s: %s", self.what, answer.text)

    async def waiting(self, job: Dispatch) -> None:
        pass

    async def report(self, result: report.Report) -> None:
        log.info("%s: %s", self.what, report.summary_text(result))


class ScheduleSource:
    name = "schedule"
    connected = True

    def __init__(
        self,
        relay: Relay,
        deferred: LaterSends,
        chats: Mapping[str, Replies],
        clock: Callable[[], float] = time.time,
        tick: float = TICK,
    ):
        self.relay, self.deferred, self.chats = relay, deferred, chats
        self.clock, self.tick = clock, tick
        self._since = 0.0  # schedule occurrences up to this time are handled
        self._firing: set[str] = set()  # keys being served now
        self._retry_at: dict[str, float] = {}  # key -> when to try a failed one again
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        self._marked_at = 0.0
        self._born_at: dict[str, float] = {}  # schedule -> when deskbot first had it
        self.leading = True  # replicas: only the one holding the clocks' lock fires them
        self.together = Together()  # refusals of sends due together: one answer per thread
        self.served = asyncio.Event()  # set each time a firing was served (the demo waits)

    async def start(self) -> None:
        now, max_age = self.clock(), self.relay.policy.message.max_age
        for name in self.relay.policy.schedules:  # the schedules there are: born now at latest
            self._born_at.setdefault(name, self._born(name, now))
        # A restart looks back max_age: an occurrence in that window that was not sent yet
        # goes out now (its key keeps one that was sent from going twice). With max_age
        # set it looks back further, to when the schedules last ran: the occurrences
        # missed while deskbot was down are then answered "not sent" where the schedule
        # reports (max_age refuses them), never sent late.
        since = now - (max_age if max_age > 0 else CATCH_UP)
        last = self.deferred.marked("schedules") if max_age > 0 else None
        if last is not None:
            since = min(since, max(last, now - LOOK_BACK))
        self._since = since

    async def run(self) -> None:
        while not self._stopped:
            if self.leading:
                self.fire_due()
            else:  # another replica fires them; if it dies, this one looks back CATCH_UP
                self._since = max(self._since, self.clock() - CATCH_UP)
            await asyncio.sleep(self.tick)

    async def stop(self) -> None:
        self._stopped = True
        if self._since > 0:  # started: what it handled is known
            self.deferred.mark("schedules", self._since)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)

    async def notify_admins(self, text: str) -> None:
        pass

    async def settle(self) -> None:
        """Wait for the sends started so far (tests, and stopping)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def fire_due(self) -> None:
        """Start every send whose time has come; each runs on its own."""
        now = self.clock()
        room = MAX_FIRING - len(self._firing)  # a thousand due at once go out in batches
        for planned in self.deferred.due(now)[: max(0, room)]:
            self._fire(planned.key, self._deferred_request(planned), self._replier_of(planned))
        for name, schedule in self.relay.policy.schedules.items():  # live reload: read anew
            zone = notices.zone(schedule.timezone or self.relay.policy.message.timezone)
            born = self._born_at.get(name)
            if born is None:  # added by a reload: from this look at the clock on
                born = self._born_at[name] = self._born(name, self._since)
            # after downtime only the latest missed occurrence counts (max_age may still
            # refuse it); never one from before the schedule existed
            latest, missed = None, 0
            for when in notices.occurrences(schedule.cron, zone, max(self._since, born), now):
                latest, missed = when, missed + 1
            if latest is None:
                continue
            if missed > 1:
                log.info(
                    "schedule %s: %d occurrences were missed; only the latest (%s) is handled",
                    name,
                    missed,
                    latest.isoformat(),
                )
            key = f"schedule:{name}:{latest.isoformat()}"
            request = self._schedule_request(name, schedule, key, latest.timestamp())
            self._fire(key, request, self._report_to(name, schedule, key))
        self._since = now
        if now - self._marked_at >= MARK_EVERY:
            self.deferred.mark("schedules", now)
            self._marked_at = now

    def _born(self, name: str, now: float) -> float:
        """When this deskbot first had the schedule (kept in the store), else ``now``."""
        born = self.deferred.marked(f"schedule-born:{name}")
        if born is None:
            born = now
            self.deferred.mark(f"schedule-born:{name}", now)
        return born

    def _fire(self, key: str, request: Request, replier: Replier) -> None:
        if key in self._firing or self._retry_at.get(key, 0.0) > self.clock():
            return
        self._firing.add(key)
        task = asyncio.get_running_loop().create_task(self._serve(key, request, replier))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, key: str, request: Request, replier: Replier) -> None:
        try:
            await serve(self.relay, request, replier)
            if key.startswith("deferred:"):
                self.deferred.close(int(key.split(":")[1]), "sent")
        except Exception:
            log.exception("%s failed; it is tried again in %.0f s", key, RETRY)
            self._retry_at[key] = self.clock() + RETRY
        finally:
            self._firing.discard(key)
            self.served.set()

    def _deferred_request(self, planned: Deferred) -> Request:
        user = ChatUser(planned.chat, planned.sender_id, planned.display_name)
        return Request(
            user,
            planned.command,
            place=planned.place,
            key=planned.key,
            sent_at=planned.due,
            thread=planned.thread,
        )

    def _replier_of(self, planned: Deferred) -> Replier:
        chat = self.chats.get(planned.chat)
        if chat is None:  # that chat is no longer configured
            return LogReplier(f"deferred send {planned.id} of {planned.chat}:{planned.sender_id}")
        user = ChatUser(planned.chat, planned.sender_id, planned.display_name)
        inner = chat.replier_for(user, planned.place, planned.thread, planned.key)
        thread = (planned.chat, planned.place, planned.thread)
        return self.together.replier(thread, planned.id, inner)

    @staticmethod
    def _schedule_request(name: str, schedule: Schedule, key: str, due: float) -> Request:
        user = ChatUser(SCHEDULE, name, name)
        place = schedule.report_to or ""
        confirm, escalate_to = schedule.confirm, schedule.escalate_to or ""
        if schedule.template is not None:  # the template may ask for confirmations itself
            values = " ".join(shlex.quote(f"{k}={v}") for k, v in schedule.vars.items())
            command = f"{schedule.targets or ''} !{schedule.template} {values}".strip()
            return Request(user, command, place, key, due, confirm=confirm, escalate_to=escalate_to)
        text, targets = schedule.text or "", schedule.targets
        return Request(
            user, text, place, key, due, targets=targets, confirm=confirm, escalate_to=escalate_to
        )

    def _report_to(self, name: str, schedule: Schedule, key: str) -> Replier:
        chat, _, place = (schedule.report_to or "").partition(":")
        source = self.chats.get(chat)
        if source is None:
            return LogReplier(f"schedule {name}")
        return source.replier_for(ChatUser(SCHEDULE, name, name), place, "", key)
