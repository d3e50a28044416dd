"""Deferred sends and the schedules' marks in PostgreSQL, as ``deskbot.store.deferred`` in SQLite.

The same rows and rules: a planned send's id is its durable key
(``deferred:ID``), its text is erased once it is sent or cancelled, and
``close`` reports whether this call moved it out of 'pending', so of two
replicas closing one send, exactly one gets True.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

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
)

if TYPE_CHECKING:
    import psycopg

    from deskbot.store.postgres import PostgresLog

log = logging.getLogger("deskbot.deferred")


class PostgresLater:
    def __init__(self, audit: PostgresLog):
        self.audit = audit

    def mark(self, name: str, value: float) -> None:
        """Remember one number across restarts (the schedules' "handled up to" time)."""
        try:
            self.audit.run(
                f"keep {name}",
                lambda c: c.execute(MARK, (name, value)),
            )
        except AuditError as exc:  # a lost mark only narrows the next look-back
            log.warning("%s", exc)

    def marked(self, name: str) -> float | None:
        rows = self.audit._read(MARKED, (name,))
        return float(rows[0][0]) if rows else None

    def add(self, key: str, plan: Deferred) -> int:
        """Record a planned send (``plan.id`` is ignored); its id. The same key gives the first."""
        created = time.time()

        def insert(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                INSERT_DEFERRED + " ON CONFLICT (key) DO NOTHING RETURNING id",
                plan.row(key, created),
            ).fetchone()
            if row is None:
                row = conn.execute(DEFERRED_OF_KEY, (key,)).fetchone()
            assert row is not None
            return int(row[0])

        return int(self.audit.run("record the deferred send", insert))

    def get(self, deferred_id: int) -> Deferred | None:
        rows = self.audit._read(PENDING_ONE, (deferred_id,))
        return Deferred.from_row(rows[0]) if rows else None

    def due(self, now: float) -> list[Deferred]:
        """Pending sends whose time has come, oldest first."""
        rows = self.audit._read(PENDING_DUE, (now,))
        return [Deferred.from_row(r) for r in rows]

    def pending(
        self, chat: str | None, sender_id: str | None, person: str | None
    ) -> list[Deferred]:
        """One sender's pending sends (by person, else chat id), or everyone's (None)."""
        where, args = by_sender(chat, sender_id, person)
        where = f"AND {where}" if where else ""
        rows = self.audit._read(f"{PENDING} {where} ORDER BY due, id", args)
        return [Deferred.from_row(r) for r in rows]

    def close(self, deferred_id: int, state: str) -> bool:
        """'sent' or 'cancelled': the text is erased. False when it was not pending."""
        changed = self.audit.run(
            f"record {state}",
            lambda c: c.execute(CLOSE_DEFERRED, (state, deferred_id)).rowcount,
        )
        return int(changed) == 1
