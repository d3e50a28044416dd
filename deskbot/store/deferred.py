"""Deferred sends in the audit log's SQLite file: `in 20s ...` and `at 14:55 ...` survive restarts.

A row holds who planned the send, where to answer (the source's place and
thread reference) and the send's command text until it is carried out or
cancelled; then the text is erased, as the audit log keeps no text. The
row's id is the send's durable key (``deferred:ID``): the relay records that
key before any phone gets it, so a restart never sends it twice.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Protocol

from deskbot.store.base import AuditError, Deferred
from deskbot.store.rows import (
    CLOSE_DEFERRED,
    DEFERRED_OF_KEY,
    INSERT_DEFERRED,
    MARK,
    MARKED,
    PENDING,
    PENDING_DUE,
    PENDING_ONE,
    by_sender,
    sqlite,
)


class Database(Protocol):
    """What the deferred sends use of the audit log's SQLite file (``audit.AuditLog``)."""

    path: str
    db: sqlite3.Connection

    def _write(self, what: str, statements: Sequence[tuple[str, tuple[object, ...]]]) -> int: ...


log = logging.getLogger("deskbot.deferred")


class DeferredSends:
    def __init__(self, audit: Database):
        self.audit = audit  # its tables are the audit log's (deskbot.store.migrations)

    def mark(self, name: str, value: float) -> None:
        """Remember one number across restarts (the schedules' "handled up to" time)."""
        try:
            with self.audit.db:
                self.audit.db.execute(sqlite(MARK), (name, value))
        except sqlite3.Error as exc:  # a lost mark only narrows the next look-back
            log.warning("the audit log %s cannot keep %s: %s", self.audit.path, name, exc)

    def marked(self, name: str) -> float | None:
        row = self.audit.db.execute(sqlite(MARKED), (name,)).fetchone()
        return float(row[0]) if row else None

    def add(self, key: str, plan: Deferred) -> int:
        """Record a planned send (``plan.id`` is ignored); its id.

        The same command key (a command read again after a crash) gives the first id.
        """
        if key:
            row = self.audit.db.execute(sqlite(DEFERRED_OF_KEY), (key,)).fetchone()
            if row is not None:
                return int(row[0])
        return self.audit._write(
            "the deferred send", [(sqlite(INSERT_DEFERRED), plan.row(key, time.time()))]
        )

    def get(self, deferred_id: int) -> Deferred | None:
        row = self.audit.db.execute(sqlite(PENDING_ONE), (deferred_id,)).fetchone()
        return Deferred.from_row(row) if row else None

    def due(self, now: float) -> list[Deferred]:
        """Pending sends whose time has come, oldest first."""
        rows = self.audit.db.execute(sqlite(PENDING_DUE), (now,))
        return [Deferred.from_row(r) for r in rows]

    def pending(
        self, chat: str | None, sender_id: str | None, person: str | None
    ) -> list[Deferred]:
        """One sender's pending sends (by person, else chat id), or everyone's (None)."""
        where, args = by_sender(chat, sender_id, person)
        where = sqlite(f"AND {where}") if where else ""
        rows = self.audit.db.execute(f"{PENDING} {where} ORDER BY due, id", args)
        return [Deferred.from_row(r) for r in rows]

    def close(self, deferred_id: int, state: str) -> bool:
        """'sent' or 'cancelled': the text is erased. False when it was not pending."""
        try:
            with self.audit.db:
                self.audit.db.execute("BEGIN IMMEDIATE")
                changed = self.audit.db.execute(
                    sqlite(CLOSE_DEFERRED), (state, deferred_id)
                ).rowcount
        except sqlite3.Error as exc:
            why = f"the audit log {self.audit.path} cannot record {state}: {exc}"
            raise AuditError(why) from None
        return changed == 1
