"""Sign-ins to the web console in the audit log's SQLite file: who, from where, how it went.

Passwords are never written; a name is kept as typed (cut to 64 characters),
so an admin can see guessing at names that do not exist too.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deskbot.store.audit import AuditLog

log = logging.getLogger("deskbot.audit")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sign_ins (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    outcome TEXT NOT NULL
);
"""
# outcomes: "signed-in", "wrong-password" (also for an unknown name), "rate-limited",
# "signed-out", "directory-unavailable" (a directory sign-in while LDAP cannot be reached)


class SignInLog:
    def __init__(self, audit: AuditLog):
        self.audit = audit
        with audit.db:
            audit.db.executescript(SCHEMA)

    def record(self, name: str, address: str, outcome: str) -> None:
        """One sign-in attempt; a log that cannot take it is logged, never raised."""
        try:
            with self.audit.db:
                self.audit.db.execute(
                    "INSERT INTO sign_ins (ts, name, address, outcome) VALUES (?, ?, ?, ?)",
                    (time.time(), name[:64], address[:64], outcome),
                )
        except sqlite3.Error as exc:
            log.error("the audit log %s cannot record a sign-in: %s", self.audit.path, exc)

    def recent(self, limit: int = 50) -> list[tuple[float, str, str, str]]:
        rows = self.audit.db.execute(
            "SELECT ts, name, address, outcome FROM sign_ins ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [(float(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]
