"""Sign-ins to the web console in the store: who, from where, how it went, on both backends.

Passwords are never written; a name is kept as typed (cut to 64 characters),
so an admin can see guessing at names that do not exist too. The table is a
numbered schema step (``migrations``); on PostgreSQL every replica's web
console writes to the same table.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING

from deskbot.store.base import AuditError

if TYPE_CHECKING:
    from deskbot.store.audit import AuditLog
    from deskbot.store.postgres import PostgresLog

log = logging.getLogger("deskbot.audit")

# outcomes: "signed-in", "wrong-password" (also for an unknown name), "rate-limited",
# "signed-out", "directory-unavailable" (a directory sign-in while LDAP cannot be reached)
INSERT = "INSERT INTO sign_ins (ts, name, address, outcome) VALUES (%s, %s, %s, %s)"
RECENT = "SELECT ts, name, address, outcome FROM sign_ins ORDER BY id DESC LIMIT %s"
Row = tuple[float, str, str, str]


def _row(name: str, address: str, outcome: str) -> Row:
    return (time.time(), name[:64], address[:64], outcome)


def _rows(found: list[tuple[object, ...]]) -> list[Row]:
    return [(float(str(r[0])), str(r[1]), str(r[2]), str(r[3])) for r in found]


class SignInLog:
    """In the audit log's SQLite file."""

    def __init__(self, audit: AuditLog):
        self.audit = audit

    def record(self, name: str, address: str, outcome: str) -> None:
        """One sign-in attempt; a log that cannot take it is logged, never raised."""
        try:
            with self.audit.db:
                self.audit.db.execute(INSERT.replace("%s", "?"), _row(name, address, outcome))
        except sqlite3.Error as exc:
            log.error("the audit log %s cannot record a sign-in: %s", self.audit.path, exc)

    def recent(self, limit: int = 50) -> list[Row]:
        return _rows(self.audit.db.execute(RECENT.replace("%s", "?"), (limit,)).fetchall())


class PostgresSignIns:
    """In the PostgreSQL database the replicas share (one round trip, 2 s at most)."""

    def __init__(self, audit: PostgresLog):
        self.audit = audit

    def record(self, name: str, address: str, outcome: str) -> None:
        """One sign-in attempt; a log that cannot take it is logged, never raised."""
        row = _row(name, address, outcome)
        try:
            self.audit.run("record a sign-in", lambda c: c.execute(INSERT, row))
        except AuditError as exc:
            log.error("%s", exc)

    def recent(self, limit: int = 50) -> list[Row]:
        return _rows(self.audit._read(RECENT, (limit,)))
