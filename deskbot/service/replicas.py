"""What a replica does for the others: renew holds, take over a dead one's commands, lead clocks.

Every ``lease / 3`` seconds, off the event loop:

- the commands this replica is still working on (``relay.held``) get their hold
  renewed, so no other replica takes them while this one lives;
- a command whose owner stopped renewing (killed, its machine gone) and whose
  reply never reached the chat is claimed (an epoch bump: one replica wins, and
  the old owner's late writes are refused) and answered the way a restart
  answers it: the phones that confirmed with their codes, the rest "not
  confirmed", nothing sent again;
- the clocks' leadership (later sends, schedules) is checked: one replica fires
  them; each occurrence's key is the guarantee that two never both send it.

On SQLite (one box) there are no others: the hold is kept the same way, the
one process always leads, and a restarted process answers its own orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from deskbot.relay.replay import replayed
from deskbot.relay.values import ChatUser

if TYPE_CHECKING:
    from deskbot.relay.relay import Relay
    from deskbot.sources.base import Replies
    from deskbot.sources.schedule import ScheduleSource
    from deskbot.store.base import CommandLog, Orphan

log = logging.getLogger("deskbot.replicas")


class Replicas:
    def __init__(
        self,
        relay: Relay,
        audit: CommandLog,
        chats: Mapping[str, Replies],
        schedule: ScheduleSource,
        lease: float,
    ):
        self.relay, self.audit, self.chats, self.schedule = relay, audit, chats, schedule
        self.every = lease / 3
        self.leading = False

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.once()
            except Exception:  # the store is down: the next round tries again
                log.exception("replica round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.every)

    async def once(self) -> None:
        await asyncio.to_thread(self.audit.hold, list(self.relay.held))
        leading = await asyncio.to_thread(self.audit.leads)
        if leading != self.leading:
            log.info("this replica %s the clocks", "leads" if leading else "no longer leads")
        self.leading = self.schedule.leading = leading
        for orphan in await asyncio.to_thread(self.audit.orphans):
            if orphan.command_id not in self.relay.held:
                await self.take_over(orphan)

    async def take_over(self, orphan: Orphan) -> None:
        seen = await asyncio.to_thread(self.audit.seen, orphan.key)
        if seen is None or seen.answered or seen.command_id != orphan.command_id:
            return
        if not await asyncio.to_thread(self.audit.claim, orphan.command_id, orphan.epoch):
            return  # another replica won it
        if seen.owner not in ("", self.audit.replica):
            self.relay.takeovers += 1
        log.warning("took over command %s of replica %s", orphan.key, seen.owner or "?")
        self.relay.held[orphan.command_id] = orphan.key
        try:
            chat = self.chats.get(orphan.chat)
            if chat is not None:
                user = ChatUser(orphan.chat, orphan.sender_id, orphan.sender_id)
                replier = chat.replier_for(user, orphan.place, orphan.thread, orphan.key)
                try:
                    await replier.report(replayed(seen))
                except BaseException:  # the next round tries again
                    await asyncio.to_thread(self.audit.reply_failed, orphan.command_id)
                    raise
                await asyncio.to_thread(self.audit.answered, orphan.key)
            else:  # a webhook or a schedule's: nobody to tell; the log has what the phones said
                await asyncio.to_thread(self.audit.let_go, orphan.command_id)
        finally:
            self.relay.held.pop(orphan.command_id, None)
