"""Audit log in SQLite: every command and every delivery, never a message body.

A command row is committed before its messages go out, so what a user was
told is in the log even if deskbot dies mid-send.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("deskbot.audit")

SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    chat TEXT NOT NULL,
    sender_id TEXT NOT NULL,
    person TEXT,
    place TEXT NOT NULL DEFAULT '',
    targets TEXT NOT NULL,
    text_chars INTEGER NOT NULL,
    phones INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    command_id INTEGER NOT NULL REFERENCES commands(id),
    ts REAL NOT NULL,
    extension TEXT NOT NULL,
    uri TEXT NOT NULL,
    code INTEGER NOT NULL,
    reason TEXT NOT NULL,
    elapsed_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_sender ON commands(chat, sender_id, id);
CREATE INDEX IF NOT EXISTS deliveries_command ON deliveries(command_id);
"""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    ts: float
    who: str
    targets: str
    text_chars: int
    phones: int
    delivered: int
    answers: str  # "200 OK, 404 Not Found"


class AuditLog:
    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def command(
        self,
        *,
        chat: str,
        sender_id: str,
        person: str | None,
        place: str,
        targets: str,
        text_chars: int,
        phones: int,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO commands (ts, chat, sender_id, person, place, targets, text_chars, phones)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), chat, sender_id, person, place, targets, text_chars, phones),
        )
        return int(cur.lastrowid or 0)

    def deliveries(self, command_id: int, rows: list[tuple[str, str, int, str, float]]) -> None:
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO deliveries (command_id, ts, extension, uri, code, reason, elapsed_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(command_id, now, *row) for row in rows],
            )

    def history(
        self, *, chat: str | None, sender_id: str | None, person: str | None, limit: int = 10
    ) -> list[HistoryEntry]:
        """Last sends of one sender (by person, else by chat id), or of everyone."""
        where, args = "", ()  # type: tuple[str, tuple[str, ...]]
        if person:
            where, args = "WHERE c.person = ?", (person,)
        elif chat and sender_id:
            where, args = "WHERE c.chat = ? AND c.sender_id = ?", (chat, sender_id)
        rows = self.db.execute(
            f"""SELECT c.ts, COALESCE(c.person, c.chat || ':' || c.sender_id), c.targets,
                       c.text_chars, c.phones,
                       SUM(CASE WHEN d.code BETWEEN 200 AND 299 THEN 1 ELSE 0 END),
                       GROUP_CONCAT(d.code || ' ' || d.reason, ', ')
                FROM commands c LEFT JOIN deliveries d ON d.command_id = c.id
                {where} GROUP BY c.id ORDER BY c.id DESC LIMIT ?""",
            (*args, limit),
        ).fetchall()
        return [HistoryEntry(r[0], r[1], r[2], r[3], r[4], r[5] or 0, r[6] or "") for r in rows]


def open_audit(path: str) -> AuditLog | None:
    """The audit log, or None (logged) when it cannot be opened: it never blocks a send."""
    try:
        return AuditLog(path)
    except (OSError, sqlite3.Error) as exc:
        log.error("audit log %s unavailable: %s", path, exc)
        return None
