"""Live rows of a send: each phone's answer and confirmation, pushed to the pages watching.

The relay calls ``Watches.delivered`` for every phone's answer as it comes
(``Relay.on_delivery``), and the ``Confirmer`` calls ``Watches.confirmed`` for
each press of a confirm key; a page's event stream gets a ``Row`` per phone at
once, then each new one, and ``DONE`` when every phone has answered (again
when the last confirmation is in or ``confirm_within`` has passed). A send is
kept for ``KEEP`` seconds after its last answer, for a page opened or
reloaded late; History has it after that.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from deskbot.relay import report
from deskbot.relay.confirm import CONFIRMED, NOT_CONFIRMED, UNSUPPORTED, WAITING, why_not

if TYPE_CHECKING:
    from deskbot.directory.snapshot import Phone
    from deskbot.senders.base import Delivery
    from deskbot.store.base import Confirmation

KEEP = 3600.0  # seconds a finished send stays watchable
MOST = 1000  # sends kept at once; the oldest goes first
WAITING_ANSWER = "waiting for the phone…"
DONE: Final = "done"  # in a listener's queue: every phone has answered, or the confirmations are in


@dataclass(frozen=True, slots=True)
class Row:
    extension: str
    label: str
    answer: str  # "200 OK", "408 Request Timeout", "not sent: ..." or WAITING_ANSWER
    outcome: str  # "delivered", "refused", "no-answer", "unconfirmed", "skipped", "waiting"
    hint: str = ""
    elapsed_ms: float = 0.0
    confirm: str = ""  # "waiting", "confirmed", "unsupported", "not confirmed"; "": not asked
    confirmed_at: float | None = None  # epoch seconds of the press
    format: str = "message"

    @property
    def confirm_words(self) -> str:
        """What the page says: "waiting", "confirmed at" (a <time> follows), "cannot confirm"."""
        if self.confirm == CONFIRMED:
            return "confirmed at"
        if self.confirm == UNSUPPORTED:
            return why_not(self.format)
        return self.confirm

    def record(self) -> dict[str, object]:
        return {
            "extension": self.extension,
            "label": self.label,
            "answer": self.answer,
            "outcome": self.outcome,
            "hint": self.hint,
            "elapsed_ms": round(self.elapsed_ms),
            "confirm": self.confirm,
            "confirm_words": self.confirm_words,
            "confirmed_at": self.confirmed_at,
        }


def row_of(phone: Phone, delivery: Delivery | None, skipped: str = "") -> Row:
    fmt = phone.format
    if delivery is None:
        if skipped:
            return Row(
                phone.extension, phone.label, f"not sent: {skipped}", "skipped", skipped, format=fmt
            )
        return Row(phone.extension, phone.label, WAITING_ANSWER, "waiting", format=fmt)
    answer = "no answer" if delivery.code == 0 else f"{delivery.code} {delivery.reason}"
    return Row(
        phone.extension,
        phone.label,
        answer,
        delivery.outcome.value,
        report.hint(delivery, phone),
        delivery.elapsed_ms,
        format=fmt,
    )


def confirm_of(line: report.Line) -> str:
    """A report line's confirm state as far as the send knows: asked, cannot, or not asked."""
    if line.confirm.startswith("cannot"):
        return UNSUPPORTED
    return WAITING if line.confirm else ""


Listener = asyncio.Queue[Row | str]  # a page's event stream: rows, and DONE


@dataclass
class Watched:
    command_id: int
    owner: str  # the person who sent it
    title: str  # "alice → 486 (Reception), 487: lunch is here"
    rows: dict[str, Row]  # by extension, in the command's order
    started: float = field(default_factory=time.time)
    finished: float | None = None
    summary: str = ""
    confirm_until: float | None = None  # a confirm send: when waiting becomes "not confirmed"
    listeners: set[Listener] = field(default_factory=set)

    @property
    def waiting(self) -> int:
        """Phones whose confirm key is waiting for a press."""
        return sum(1 for row in self.rows.values() if row.confirm == WAITING)

    @property
    def settled(self) -> bool:
        """Nothing more will change: every phone answered, and no confirmation is awaited."""
        return self.finished is not None and not self.waiting

    def listen(self) -> Listener:
        """A queue that gets every row now, then each change, and DONE when the phones answered."""
        queue: Listener = asyncio.Queue()
        for row in self.rows.values():
            queue.put_nowait(row)
        if self.finished is not None:
            queue.put_nowait(DONE)
        if not self.settled:
            self.listeners.add(queue)
        return queue

    def change(self, row: Row) -> None:
        self.rows[row.extension] = row
        for queue in self.listeners:
            queue.put_nowait(row)

    def end_if_settled(self) -> None:
        if self.settled:
            for queue in self.listeners:
                queue.put_nowait(DONE)
            self.listeners.clear()

    def expire(self, now: float) -> None:
        """After confirm_within, a phone still waiting is "not confirmed"."""
        if self.confirm_until is None or now < self.confirm_until or self.finished is None:
            return
        for row in list(self.rows.values()):
            if row.confirm == WAITING:
                self.change(replace(row, confirm=NOT_CONFIRMED))
        self.end_if_settled()


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
        before = watched.rows.get(phone.extension)
        row = row_of(phone, delivery)
        if before is not None:  # a press may come before the answer is in
            row = replace(row, confirm=before.confirm, confirmed_at=before.confirmed_at)
        watched.change(row)

    def confirmed(self, confirmation: Confirmation) -> None:
        """The Confirmer's listener: a phone's key was pressed (the first time)."""
        watched = self.by_command.get(confirmation.command_id)
        before = watched.rows.get(confirmation.extension) if watched else None
        if watched is None or before is None:
            return
        at = confirmation.confirmed_at or time.time()
        watched.change(replace(before, confirm=CONFIRMED, confirmed_at=at))
        watched.end_if_settled()

    def finish(self, command_id: int, result: report.Report) -> None:
        watched = self.by_command.get(command_id)
        if watched is None:
            return
        for line in result.lines:  # the report is the last word (a skipped phone, a replay)
            row = row_of(line.phone, line.delivery, line.skipped)
            before = watched.rows.get(line.phone.extension)
            state = confirm_of(line)
            if before is not None and before.confirm == CONFIRMED and state == WAITING:
                row = replace(row, confirm=CONFIRMED, confirmed_at=before.confirmed_at)
            else:
                row = replace(row, confirm=state)
            watched.rows[line.phone.extension] = row
        watched.finished = time.time()
        watched.summary = report.summary_text(result)
        for queue in watched.listeners:
            for row in watched.rows.values():
                queue.put_nowait(row)
            queue.put_nowait(DONE)
        if watched.settled:
            watched.listeners.clear()
