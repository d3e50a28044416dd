"""Confirmation requests in the audit log's SQLite file: one row per (command, phone).

A row is written before the phone gets its screen: the token's SHA-256 (the
token itself is never stored, so a copy of the file confirms nothing), when
it expires, and the phone's state: ``waiting``, ``confirmed`` (with its time)
or ``unsupported`` (a format without keys). A press is recorded once, in one
statement that only changes a waiting, unexpired row; ``posted`` marks that
the confirmation reached the command's thread, so a restart posts it once.
The tables are step 7 of ``migrations``; ``pgconfirms`` keeps the same rows in
PostgreSQL, with the helpers here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from typing import Protocol

from deskbot.store.base import NO_FOLLOW_UP, AuditError, Confirmation, FollowUp, Thread
from deskbot.store.rows import sqlite

log = logging.getLogger("deskbot.confirms")

COLUMNS = "command_id, extension, format, state, confirmed_at, expires"


class Database(Protocol):
    """What the confirmations use of the audit log's SQLite file (``audit.AuditLog``)."""

    path: str
    db: sqlite3.Connection

    def _write(self, what: str, statements: Sequence[tuple[str, tuple[object, ...]]]) -> int: ...


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


THREAD = "chat, sender_id, place, thread"
FOLLOW = "escalate_to, text, client, labels, due"


def labels_text(follow: FollowUp) -> str:
    return json.dumps(dict(follow.labels), sort_keys=True) if follow.labels else ""


def follow_up(row: tuple[object, ...]) -> FollowUp:
    escalate_to, text, client, labels = map(str, row[:4])
    found = json.loads(labels) if labels else {}
    pairs = tuple((str(k), str(v)) for k, v in found.items()) if isinstance(found, dict) else ()
    return FollowUp(escalate_to, text, client, pairs, float(str(row[4])))


# The statements both backends run, in PostgreSQL's placeholders (``rows.sqlite`` for SQLite).
REMEMBER = (
    "INSERT INTO confirm_threads"
    " (command_id, chat, sender_id, place, thread, due, escalate_to, text, client, labels)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (command_id) DO NOTHING"
)
WHERE = f"SELECT {THREAD} FROM confirm_threads WHERE command_id = %s"
FOLLOWING = f"SELECT {FOLLOW} FROM confirm_threads WHERE command_id = %s"
OVERDUE = (
    "SELECT command_id FROM confirm_threads WHERE summarized = 0 AND due <= %s"
    " ORDER BY due LIMIT 100"
)
SUMMARIZED = "UPDATE confirm_threads SET summarized = 1, text = '' WHERE command_id = %s"
ASK = (
    "INSERT INTO confirms (command_id, extension, token_hash, host, format, expires, state)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
UNPOSTED = (
    f"SELECT {COLUMNS} FROM confirms WHERE state = 'confirmed' AND posted = 0 ORDER BY confirmed_at"
)
POSTED = "UPDATE confirms SET posted = 1 WHERE command_id = %s AND extension = %s"
RETHREAD = "UPDATE confirm_threads SET thread = %s WHERE command_id = %s"


def asked(
    command_id: int, extension: str, format: str, token: str | None, host: str, expires: float
) -> tuple[object, ...]:
    """The row ``ask`` inserts (token None: the format has no keys, ``unsupported``)."""
    hashed, state = (digest(token), "waiting") if token else (None, "unsupported")
    return (command_id, extension, hashed, host, format, expires, state)


def remembered(command_id: int, where: Thread, due: float, follow: FollowUp) -> tuple[object, ...]:
    """The row ``remember`` inserts, in the order of ``REMEMBER``'s columns."""
    w, f = where, follow
    return (command_id, *(w.chat, w.sender_id, w.place, w.thread), due,
            f.escalate_to, f.text, f.client, labels_text(f))  # fmt: skip


def _row(row: tuple[object, ...]) -> Confirmation:
    command_id, extension, format, state, confirmed_at, expires = row
    return Confirmation(
        int(str(command_id)),
        str(extension),
        str(format),
        str(state),
        None if confirmed_at is None else float(str(confirmed_at)),
        float(str(expires)),
    )


class SqliteConfirmations:
    def __init__(self, audit: Database):
        self.audit = audit  # its tables: step 7 of the migrations

    def remember(
        self, command_id: int, where: Thread, due: float, follow: FollowUp = NO_FOLLOW_UP
    ) -> None:
        """Where the command was given (its confirmations are posted there), when the
        thread is to name the phones that did not confirm, and what follows then."""
        row = remembered(command_id, where, due, follow)
        self.audit._write(
            "where a command was given",
            [(sqlite(REMEMBER), row)],
        )

    def where(self, command_id: int) -> Thread | None:
        row = self.audit.db.execute(sqlite(WHERE), (command_id,)).fetchone()
        return Thread(*map(str, row)) if row else None

    def follow_up(self, command_id: int) -> FollowUp | None:
        row = self.audit.db.execute(sqlite(FOLLOWING), (command_id,)).fetchone()
        return follow_up(row) if row else None

    def overdue(self, now: float) -> list[int]:
        """Commands whose confirm_within has passed and whose thread was not told yet."""
        rows = self.audit.db.execute(sqlite(OVERDUE), (now,))
        return [int(r[0]) for r in rows]

    def summarized(self, command_id: int) -> None:
        try:
            with self.audit.db:
                self.audit.db.execute(sqlite(SUMMARIZED), (command_id,))
        except sqlite3.Error as exc:  # told again after a restart, at worst
            log.warning("the audit log %s cannot mark a summary: %s", self.audit.path, exc)

    def ask(
        self,
        command_id: int,
        extension: str,
        format: str,
        token: str | None,
        host: str,
        expires: float,
    ) -> None:
        """Keep one phone's request (token None: its format has no keys, ``unsupported``)."""
        row = asked(command_id, extension, format, token, host, expires)
        self.audit._write("a confirmation request", [(sqlite(ASK), row)])

    def press(self, token: str, host: str, now: float) -> tuple[Confirmation, bool] | None:
        """The request a token names, and whether this press confirmed it (False: again).

        None, changing nothing, when the token is unknown, expired or pressed from another
        phone's address (``host``; a request kept without a host takes any)."""
        hashed = digest(token)
        db = self.audit.db
        found = db.execute(
            f"SELECT {COLUMNS}, host FROM confirms WHERE token_hash = ?", (hashed,)
        ).fetchone()
        if found is None or float(found[5]) <= now or (found[6] and found[6] != host):
            return None
        try:
            with db:
                changed = db.execute(
                    "UPDATE confirms SET state = 'confirmed', confirmed_at = ?"
                    " WHERE token_hash = ? AND state = 'waiting' AND expires > ?",
                    (now, hashed, now),
                ).rowcount
        except sqlite3.Error as exc:
            why = f"the audit log {self.audit.path} cannot record a confirmation: {exc}"
            raise AuditError(why) from None
        row = db.execute(f"SELECT {COLUMNS} FROM confirms WHERE token_hash = ?", (hashed,))
        return _row(row.fetchone()), bool(changed)

    def of(self, command_id: int) -> list[Confirmation]:
        rows = self.audit.db.execute(
            f"SELECT {COLUMNS} FROM confirms WHERE command_id = ? ORDER BY rowid", (command_id,)
        )
        return [_row(r) for r in rows]

    def unposted(self) -> list[Confirmation]:
        """Confirmations not yet in their command's thread (after a restart, say)."""
        rows = self.audit.db.execute(UNPOSTED)
        return [_row(r) for r in rows]

    def posted(self, command_id: int, extension: str) -> None:
        try:
            with self.audit.db:
                self.audit.db.execute(sqlite(POSTED), (command_id, extension))
        except sqlite3.Error as exc:  # posted again after a restart, at worst
            log.warning(
                "the audit log %s cannot mark a confirmation posted: %s", self.audit.path, exc
            )

    def rethread(self, command_id: int, thread: str) -> None:
        """The thread the command's answer opened after it was taken (a slash command's)."""
        self.audit._write(
            "the thread of a command",
            [(sqlite(RETHREAD), (thread, command_id))],
        )
