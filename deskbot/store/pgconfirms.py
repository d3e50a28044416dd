"""Confirmation requests in PostgreSQL, as ``deskbot.store.confirms`` keeps them in SQLite.

The same rows (step 7 of ``migrations``) and rules: the token is kept as its
SHA-256 only; a press is recorded by one conditional ``UPDATE ... RETURNING``
that only changes a waiting, unexpired row of that phone's address, so of two
replicas answering presses of one token, exactly one records it. Each call is
one round trip on the pooled connections (bounded by ``statement_timeout``);
the marks nothing waits for (posted, summarized) go to the log's writer
thread when called from the event loop, and a read waits for them first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from deskbot.store.base import NO_FOLLOW_UP, Confirmation, FollowUp, Thread
from deskbot.store.confirms import (
    ASK,
    COLUMNS,
    FOLLOWING,
    OVERDUE,
    POSTED,
    REMEMBER,
    RETHREAD,
    SUMMARIZED,
    UNPOSTED,
    WHERE,
    _row,
    asked,
    digest,
    follow_up,
    remembered,
)

if TYPE_CHECKING:
    import psycopg

    from deskbot.store.postgres import PostgresLog

log = logging.getLogger("deskbot.confirms")


class PostgresConfirmations:
    def __init__(self, audit: PostgresLog):
        self.audit = audit

    def remember(
        self, command_id: int, where: Thread, due: float, follow: FollowUp = NO_FOLLOW_UP
    ) -> None:
        row = remembered(command_id, where, due, follow)
        self.audit.run(
            "record where a command was given",
            lambda c: c.execute(REMEMBER, row),
        )

    def where(self, command_id: int) -> Thread | None:
        rows = self.audit._read(WHERE, (command_id,))
        return Thread(*map(str, rows[0])) if rows else None

    def follow_up(self, command_id: int) -> FollowUp | None:
        rows = self.audit._read(FOLLOWING, (command_id,))
        return follow_up(rows[0]) if rows else None

    def overdue(self, now: float) -> list[int]:
        rows = self.audit._read(OVERDUE, (now,))
        return [int(r[0]) for r in rows]

    def summarized(self, command_id: int) -> None:
        self.audit._in_order(
            "mark a summary",
            lambda c: c.execute(SUMMARIZED, (command_id,)),
        )

    def ask(
        self,
        command_id: int,
        extension: str,
        format: str,
        token: str | None,
        host: str,
        expires: float,
    ) -> None:
        row = asked(command_id, extension, format, token, host, expires)
        self.audit.run("record a confirmation request", lambda c: c.execute(ASK, row))

    def press(self, token: str, host: str, now: float) -> tuple[Confirmation, bool] | None:
        """As on SQLite: the request and whether this press confirmed it; None: unknown,
        expired or from another phone's address. One UPDATE decides, across replicas."""
        hashed = digest(token)
        mine = "token_hash = %s AND expires > %s AND (host = '' OR host = %s)"

        def record(conn: psycopg.Connection[Any]) -> tuple[Confirmation, bool] | None:
            row = conn.execute(
                "UPDATE confirms SET state = 'confirmed', confirmed_at = %s"
                f" WHERE {mine} AND state = 'waiting' RETURNING {COLUMNS}",
                (now, hashed, now, host),
            ).fetchone()
            if row is not None:
                return _row(row), True
            row = conn.execute(
                f"SELECT {COLUMNS} FROM confirms WHERE {mine}", (hashed, now, host)
            ).fetchone()
            return (_row(row), False) if row is not None else None

        self.audit._settle()
        result: tuple[Confirmation, bool] | None = self.audit.run("record a confirmation", record)
        return result

    def of(self, command_id: int) -> list[Confirmation]:
        rows = self.audit._read(
            f"SELECT {COLUMNS} FROM confirms WHERE command_id = %s ORDER BY seq", (command_id,)
        )
        return [_row(r) for r in rows]

    def unposted(self) -> list[Confirmation]:
        rows = self.audit._read(f"{UNPOSTED} LIMIT 1000", ())
        return [_row(r) for r in rows]

    def posted(self, command_id: int, extension: str) -> None:
        self.audit._in_order(
            "mark a confirmation posted",
            lambda c: c.execute(POSTED, (command_id, extension)),
        )

    def rethread(self, command_id: int, thread: str) -> None:
        """The thread the command's answer opened after it was taken (a slash command's)."""
        self.audit._in_order(
            "the thread of a command",
            lambda c: c.execute(RETHREAD, (thread, command_id)),
        )
