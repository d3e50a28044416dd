"""Confirmations back in the chat: each press posted to its command's thread, once.

The relay's ``Confirmer`` tells ``ConfirmPoster`` of each first press; the
poster finds where the command was given (kept in the store beside the
token), answers there through that source's ``Replies.replier_for`` ("601
Reception confirmed at 14:03"), then marks it posted. At start, ``catch_up``
posts what was pressed but not posted before a stop (or a SIGKILL), so each
confirmation reaches the thread once, even across a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deskbot.relay.values import Answer, ChatUser
from deskbot.sources.base import Replies
from deskbot.store.base import Confirmation, Confirmations

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


class ConfirmPoster:
    def __init__(
        self,
        store: Confirmations,
        chats: Mapping[str, Replies],
        label_of: Callable[[str], str],
        zone: str | None = None,
    ):
        self.store = store
        self.chats = chats
        self.label_of = label_of
        self.zone = zone
        self._tasks: set[asyncio.Task[None]] = set()

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
        cid, extension = confirmation.command_id, confirmation.extension
        where = self.store.where(cid)
        source = self.chats.get(where.chat) if where else None
        if where is None or source is None or confirmation.confirmed_at is None:
            log.info("command %d: %s confirmed; no chat to tell", cid, extension)
            self.store.posted(cid, extension)
            return
        text = confirmed_text(
            extension, self.label_of(extension), confirmation.confirmed_at, self.zone
        )
        user = ChatUser(where.chat, where.sender_id)
        replier = source.replier_for(user, where.place, where.thread, f"confirm:{cid}:{extension}")
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
            if await self._tell(command_id, text):
                self.store.summarized(command_id)
                told += 1
        return told

    async def run(self, every: float = 1.0) -> None:
        """Sweep for ever (a command due while deskbot was down is told once it is back)."""
        while True:
            try:
                await self.sweep(time.time())
            except Exception:  # a broken store or chat must not end the loop
                log.exception("confirmation sweep failed")
            await asyncio.sleep(every)

    async def _tell(self, command_id: int, text: str) -> bool:
        where = self.store.where(command_id)
        source = self.chats.get(where.chat) if where else None
        if where is None or source is None:
            return True
        user = ChatUser(where.chat, where.sender_id)
        replier = source.replier_for(user, where.place, where.thread, f"confirms:{command_id}")
        try:
            await replier.answer(Answer(text))
        except Exception as exc:  # the chat is away: told at the next sweep
            log.warning("command %d: the confirmation summary not posted: %s", command_id, exc)
            return False
        return True

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
