"""Live rows of a send: each phone's answer, pushed to the pages that watch the send.

The relay calls ``Watches.delivered`` for every phone's answer as it comes
(``Relay.on_delivery``); a page's event stream gets a ``Row`` per phone at
once, then each new one. A send is kept for ``KEEP`` seconds after its last
answer, for a page opened or reloaded late; History has it after that.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from deskbot.relay import report

if TYPE_CHECKING:
    from deskbot.directory.snapshot import Phone
    from deskbot.senders.base import Delivery

KEEP = 3600.0  # seconds a finished send stays watchable
MOST = 1000  # sends kept at once; the oldest goes first
WAITING = "waiting for the phone…"


@dataclass(frozen=True, slots=True)
class Row:
    extension: str
    label: str
    answer: str  # "200 OK", "408 Request Timeout", "not sent: ..." or WAITING
    outcome: str  # "delivered", "refused", "no-answer", "unconfirmed", "skipped", "waiting"
    hint: str = ""
    elapsed_ms: float = 0.0

    def record(self) -> dict[str, object]:
        return {
            "extension": self.extension,
            "label": self.label,
            "answer": self.answer,
            "outcome": self.outcome,
            "hint": self.hint,
            "elapsed_ms": round(self.elapsed_ms),
        }


def row_of(phone: Phone, delivery: Delivery | None, skipped: str = "") -> Row:
    if delivery is None:
        if skipped:
            return Row(phone.extension, phone.label, f"not sent: {skipped}", "skipped", skipped)
        return Row(phone.extension, phone.label, WAITING, "waiting")
    answer = "no answer" if delivery.code == 0 else f"{delivery.code} {delivery.reason}"
    return Row(
        phone.extension,
        phone.label,
        answer,
        delivery.outcome.value,
        report.hint(delivery, phone),
        delivery.elapsed_ms,
    )


@dataclass
class Watched:
    command_id: int
    owner: str  # the person who sent it
    title: str  # "alice → 486 (Reception), 487: lunch is here"
    rows: dict[str, Row]  # by extension, in the command's order
    started: float = field(default_factory=time.time)
    finished: float | None = None
    summary: str = ""
    listeners: set[asyncio.Queue[Row | None]] = field(default_factory=set)

    def listen(self) -> asyncio.Queue[Row | None]:
        """A queue that gets every row now, then each answer, then None at the end."""
        queue: asyncio.Queue[Row | None] = asyncio.Queue()
        for row in self.rows.values():
            queue.put_nowait(row)
        if self.finished is not None:
            queue.put_nowait(None)
        else:
            self.listeners.add(queue)
        return queue


class Watches:
    def __init__(self) -> None:
        self.by_command: OrderedDict[int, Watched] = OrderedDict()

    def add(self, watched: Watched) -> None:
        self.by_command[watched.command_id] = watched
        cutoff = time.time() - KEEP
        while self.by_command and (
            len(self.by_command) > MOST
            or (next(iter(self.by_command.values())).finished or cutoff) < cutoff
        ):
            self.by_command.popitem(last=False)

    def get(self, command_id: int) -> Watched | None:
        return self.by_command.get(command_id)

    def delivered(self, command_id: int, phone: Phone, delivery: Delivery) -> None:
        watched = self.by_command.get(command_id)
        if watched is None:
            return
        row = row_of(phone, delivery)
        watched.rows[phone.extension] = row
        for queue in watched.listeners:
            queue.put_nowait(row)

    def finish(self, command_id: int, result: report.Report) -> None:
        watched = self.by_command.get(command_id)
        if watched is None:
            return
        for line in result.lines:  # the report is the last word (a skipped phone, a replay)
            watched.rows[line.phone.extension] = row_of(line.phone, line.delivery, line.skipped)
        watched.finished = time.time()
        watched.summary = report.summary_text(result)
        for queue in watched.listeners:
            queue.put_nowait(None)
        watched.listeners.clear()
