"""Confirmations back in the chat: each press posted to its command's thread, once.

The relay's ``Confirmer`` tells ``ConfirmPoster`` of each first press; the
poster finds where the command was given (kept in the store beside the
token), answers there through that source's ``Replies.replier_for`` ("601
Reception confirmed at 14:03"), then marks it posted. At start, ``catch_up``
posts what was pressed but not posted before a stop (or a SIGKILL), so each
confirmation reaches the thread once, even across a restart.

Once ``confirm_within`` has passed (``sweep``, on the replica that fires the
clocks), the thread is told who did not confirm, and a command's
``escalate_to`` is sent "Not confirmed at 602 Lobby: TEXT" through the relay
(limits, audit) under the key ``escalate:ID``: a crash between that send and
the mark that it is done sends it once, and one that fell due while deskbot
was down longer than ``max_age`` is answered "not sent" in the thread.

A press of an alert's text, when its API client has ``alertmanager`` and
``silence_on_confirm``, first silences that alert there (``silences``); what
Alertmanager answered goes into the line posted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deskbot.relay import report
from deskbot.relay.relay import Relay
from deskbot.relay.values import SCHEDULE, Answer, ChatUser, Dispatch, Request
from deskbot.service.silences import Silencer
from deskbot.sources.base import Replier, Replies
from deskbot.sources.serve import serve
from deskbot.store.base import Confirmation, Confirmations, FollowUp, Thread

log = logging.getLogger("deskbot.confirm")


def confirmed_text(extension: str, label: str, at: float, zone: str | None) -> str:
    """``601 Reception confirmed at 14:03`` (the time in ``zone``, else the host's)."""
    try:
        tz = ZoneInfo(zone) if zone else None
    except (ZoneInfoNotFoundError, ValueError):
        tz = None
    clock = datetime.fromtimestamp(at, tz).astimezone(tz).strftime("%H:%M")
    return " ".join(filter(None, (extension, label, f"confirmed at {clock}")))


def summary_text(
    confirmed: int, asked: int, missing: list[str], label_of: Callable[[str], str]
) -> str:
    """``1/3 confirmed; not confirmed: 602 Lobby, 604`` (phones without keys not named)."""
    text = f"{confirmed}/{asked} confirmed"
    if missing:
        names = ", ".join(" ".join(filter(None, (e, label_of(e)))) for e in missing)
        text += f"; not confirmed: {names}"
    return text


def escalation_text(
    missing: list[str], label_of: Callable[[str], str], text: str, most: int
) -> str:
    """``Not confirmed at 602 Lobby, 604: Fire drill at 14:00``, cut to ``most`` characters."""
    names = ", ".join(" ".join(filter(None, (e, label_of(e)))) for e in missing)
    full = f"Not confirmed at {names}: {text}"
    return full if len(full) <= most else full[: most - 1].rstrip() + "…"


class Quiet:
    """The escalation's own replier: what it says goes into the thread's summary instead."""

    waiting_after = None

    async def answer(self, answer: Answer) -> None:
        pass

    async def waiting(self, job: Dispatch) -> None:
        pass

    async def report(self, result: report.Report) -> None:
        pass


MAX_TOLD_LINES = 5  # an escalation to more phones is summed up ("12/12 delivered")


class ConfirmPoster:
    """Posts each press to its command's thread; ``told`` is set after each sweep that told one."""

    def __init__(
        self,
        store: Confirmations,
        chats: Mapping[str, Replies],
        label_of: Callable[[str], str],
        zone: str | None = None,
        relay: Relay | None = None,
        leads: Callable[[], bool] = lambda: True,
        silencer: Silencer | None = None,
    ):
        self.store = store
        self.chats = chats
        self.label_of = label_of
        self.zone = zone
        self.relay = relay  # sends the escalations; None: none are sent
        self.leads = leads  # replicas: only the one firing the clocks sweeps
        self.silencer = silencer  # a confirmed alert silenced in its client's Alertmanager
        self._tasks: set[asyncio.Task[None]] = set()
        self.told = asyncio.Event()  # a thread was told who did not confirm (the demo waits)

    def pressed(self, confirmation: Confirmation) -> None:
        """The Confirmer's listener: post it soon (the phone's answer does not wait for it)."""
        task = asyncio.get_running_loop().create_task(self.post(confirmation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def catch_up(self) -> int:
        """Post every confirmation pressed but not yet posted; how many were."""
        waiting = self.store.unposted()
        for confirmation in waiting:
            await self.post(confirmation)
        return len(waiting)

    async def post(self, confirmation: Confirmation) -> None:
        """Silence the alert it confirms (if its client asks), then tell the thread."""
        cid, extension = confirmation.command_id, confirmation.extension
        if confirmation.confirmed_at is None:
            self.store.posted(cid, extension)
            return
        label = self.label_of(extension)
        text = confirmed_text(extension, label, confirmation.confirmed_at, self.zone)
        if self.silencer is not None and self._first(confirmation):  # one silence an alert
            phone = " ".join(filter(None, (extension, label)))
            said = await self.silencer.silence(self.store.follow_up(cid), phone, cid)
            text = f"{text}; {said}" if said else text
        where = self.store.where(cid)
        replier = self._replier(where, f"confirm:{cid}:{extension}") if where else None
        if replier is None:
            log.info("command %d: %s confirmed; no chat to tell", cid, extension)
            self.store.posted(cid, extension)
            return
        try:
            await replier.answer(Answer(text))
        except Exception as exc:  # the chat is away: posted at the next start
            log.warning("command %d: %s's confirmation not posted: %s", cid, extension, exc)
            return
        self.store.posted(cid, extension)

    async def sweep(self, now: float) -> int:
        """Tell each thread whose confirm_within passed who did not confirm; how many told."""
        told = 0
        for command_id in self.store.overdue(now):
            asked = self.store.of(command_id)
            confirmed = sum(1 for c in asked if c.state == "confirmed")
            missing = [c.extension for c in asked if c.state == "waiting"]
            text = summary_text(confirmed, len(asked), missing, self.label_of)
            follow = self.store.follow_up(command_id)
            if follow is not None and follow.escalate_to and missing:
                text += "\n" + await self._escalate(command_id, follow, missing)
            if await self._tell(command_id, text):
                self.store.summarized(command_id)
                told += 1
        if told:
            self.told.set()
        return told

    async def run(self, every: float = 1.0) -> None:
        """Sweep for ever (a command due while deskbot was down is told once it is back)."""
        while True:
            try:
                if self.leads():
                    await self.sweep(time.time())
            except Exception:  # a broken store or chat must not end the loop
                log.exception("confirmation sweep failed")
            await asyncio.sleep(every)

    async def _escalate(self, command_id: int, follow: FollowUp, missing: list[str]) -> str:
        """Send the escalation once (its key); what the thread is told of it."""
        where = self.store.where(command_id) or Thread("", "", "", "")
        to = follow.escalate_to
        if self.relay is None:
            return f"{to} not told: no relay"
        most = self.relay.policy.message.max_chars
        request = Request(
            ChatUser(where.chat, where.sender_id),
            escalation_text(missing, self.label_of, follow.text, most),
            place=where.place,
            key=f"escalate:{command_id}",
            sent_at=follow.due,  # due longer than max_age ago: answered "not sent"
            targets=to,
            thread=where.thread,
        )
        said = await serve(self.relay, request, Quiet())
        if said is None:  # sent before a restart (or by another replica)
            return f"told {to}"
        if isinstance(said, Answer):
            return f"{to} not told: {said.text}"
        if len(said.lines) > MAX_TOLD_LINES:
            return f"told {to}: {report.summary_text(said)}"
        return f"told {to}: " + "; ".join(report.line_text(line) for line in said.lines)

    async def _tell(self, command_id: int, text: str) -> bool:
        where = self.store.where(command_id)
        replier = self._replier(where, f"confirms:{command_id}") if where else None
        if replier is None:
            return True
        try:
            await replier.answer(Answer(text))
        except Exception as exc:  # the chat is away: told at the next sweep
            log.warning("command %d: the confirmation summary not posted: %s", command_id, exc)
            return False
        return True

    def _first(self, confirmation: Confirmation) -> bool:
        """Whether it is the command's first press (the earliest; a tie: the lower phone)."""
        pressed = [c for c in self.store.of(confirmation.command_id) if c.confirmed_at]
        first = min(pressed, key=lambda c: (c.confirmed_at or 0.0, c.extension), default=None)
        return first is None or first.extension == confirmation.extension

    def _replier(self, where: Thread, key: str) -> Replier | None:
        """Where the command was given; a schedule's: its report_to place. None: no chat."""
        chat, place, user = where.chat, where.place, ChatUser(where.chat, where.sender_id)
        if chat == SCHEDULE:
            chat, _, place = place.partition(":")
        source = self.chats.get(chat)
        return source.replier_for(user, place, where.thread, key) if source else None

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def poster_for(
    relay: Relay,
    chats: Mapping[str, Replies],
    zone: str | None,
    leads: Callable[[], bool] = lambda: True,
    silencer: Silencer | None = None,
) -> ConfirmPoster | None:
    """The relay's presses posted to their threads in ``chats``; None: it asks for none."""
    confirmer = relay.confirmer
    if confirmer is None:
        return None

    def label(extension: str) -> str:  # the directory as it is now: a reload's labels
        phone = relay.directory.phones.get(extension)
        return phone.label if phone else ""

    poster = ConfirmPoster(confirmer.store, chats, label, zone, relay, leads, silencer)
    confirmer.on_confirm.append(poster.pressed)
    return poster
