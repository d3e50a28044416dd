"""Audit log and idempotency keys in SQLite: every command and delivery, never a message body.

A command row, with the source's key for it and the phones it goes to, is
committed before any message goes out; each phone's answer is recorded as it
comes in; ``finish`` marks the command sent and ``answered`` marks that its
reply reached the chat. So after a crash at any point, a command that comes
in again (a Matrix sync read again, a Slack retry) is recognised: it is never
sent twice, and it is answered once, from what was recorded.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deskbot.store import private, rows
from deskbot.store.base import (
    Answer,
    AuditError,
    Commanded,
    HistoryEntry,
    Orphan,
    Planned,
    Seen,
    Taken,
)
from deskbot.store.migrations import LATEST, STEPS
from deskbot.store.rows import sqlite

if TYPE_CHECKING:
    from deskbot.store.confirms import SqliteConfirmations
    from deskbot.store.deferred import DeferredSends
    from deskbot.store.signins import SignInLog

log = logging.getLogger("deskbot.audit")

BUSY_TIMEOUT = 2.0  # seconds to wait for another process's lock before saying so


class AuditLog:
    shared = False  # one box: the relay counts rates in memory

    def __init__(self, path: str | Path, replica: str = "", lease: float = 10.0):
        self.path = str(path)
        self.replica = replica
        self.lease = lease
        try:
            private.prepare(self.path)  # folder 0700, file 0600 before SQLite opens it
            self.db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise AuditError(f"the audit log {self.path}: {exc}") from None
        self._pending: list[tuple[int, float, str, str, int, str, float, str]] = []
        # each transaction's seconds and whether it was written (/metrics)
        self.on_write: list[Callable[[float, bool], None]] = []

    def _migrate(self) -> None:
        """The steps of ``migrations`` this file lacks, in one transaction."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # fails at once on a read-only file or disk
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for step in STEPS:
                if step.version <= version:
                    continue
                for statement in step.sqlite:
                    words = statement.split()
                    if words[3:5] == ["ADD", "COLUMN"]:  # a file from before the numbering
                        columns = {r[1] for r in self.db.execute(f"PRAGMA table_info({words[2]})")}
                        if words[5] in columns:
                            continue
                    self.db.execute(statement)
            if version < LATEST:
                self.db.execute(f"PRAGMA user_version = {LATEST}")

    def close(self) -> None:
        self.db.close()

    def deferred_sends(self) -> DeferredSends:
        """The deferred sends kept in the same file."""
        from deskbot.store.deferred import DeferredSends

        return DeferredSends(self)

    def sign_ins(self) -> SignInLog:
        """The web console's sign-ins kept in the same file."""
        from deskbot.store.signins import SignInLog

        return SignInLog(self)

    def confirmations(self) -> SqliteConfirmations:
        """The confirmation requests kept in the same file."""
        from deskbot.store.confirms import SqliteConfirmations

        return SqliteConfirmations(self)

    def _write(
        self,
        what: str,
        statements: Sequence[tuple[str, tuple[object, ...]]],
        deliveries: Sequence[tuple[object, ...]] = (),
    ) -> int:
        """Run statements (after the phones' answers) in one transaction; AuditError if the
        log cannot take them. Returns the last row id the statements inserted."""
        started, ok = time.perf_counter(), False
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                if deliveries:
                    self.db.executemany(_INSERT_DELIVERY, deliveries)
                last = 0
                for sql, args in statements:
                    last = self.db.execute(sql, args).lastrowid or last
                ok = True
                return int(last)
        except sqlite3.IntegrityError as exc:
            if "commands.key" in str(exc):  # another process recorded this key first
                raise Taken(f"the audit log {self.path}: the command's key is taken") from None
            raise AuditError(f"the audit log {self.path} cannot record {what}: {exc}") from None
        except sqlite3.Error as exc:
            raise AuditError(f"the audit log {self.path} cannot record {what}: {exc}") from None
        finally:
            for listener in self.on_write:
                listener(time.perf_counter() - started, ok)

    def command(
        self,
        *,
        key: str | None,
        chat: str,
        sender_id: str,
        person: str | None,
        place: str,
        targets: str,
        text_chars: int,
        plan: list[Planned],
        reuse_before: float | None = None,
        origin: str = "",
        thread: str = "",
    ) -> int:
        """Record a command before its first message leaves; its id.

        ``reuse_before``: a key that expires (alerts); an older command with the same key
        gives it up in the same transaction (kept as ``KEY#ID``). A younger one still
        makes this fail, so a key is never taken twice.
        """
        now = time.time()
        release: list[tuple[str, tuple[object, ...]]] = []
        if key and reuse_before is not None:
            release.append(
                (
                    "UPDATE commands SET key = key || '#' || id WHERE key = ? AND ts < ?",
                    (key, reuse_before),
                )
            )
        return self._write(
            "the command",
            [
                *release,
                (
                    sqlite(rows.INSERT_COMMAND),
                    rows.command_values(
                        self.replica,
                        now + self.lease,
                        now,
                        key,
                        chat,
                        sender_id,
                        person,
                        place,
                        targets,
                        text_chars,
                        plan,
                        origin,
                        thread,
                    ),
                ),
            ],
        )

    def claim(self, command_id: int, epoch: int) -> bool:
        """Take over a command whose hold expired (or that this replica held before)."""
        now = time.time()
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                changed = self.db.execute(sqlite(rows.CLAIM), (
                    self.replica, now + self.lease, command_id, epoch, now, self.replica,
                    self.replica,
                )).rowcount  # fmt: skip
        except sqlite3.Error as exc:
            log.error("the audit log %s cannot record a take-over: %s", self.path, exc)
            return False
        return changed == 1

    def take_slots(
        self, keys: list[str], limit: int, window: float, tag: str = ""
    ) -> dict[str, float]:
        now, waits = time.time(), {}
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("DELETE FROM rates WHERE ts < ?", (now - window,))
                for key in dict.fromkeys(keys):
                    rows = self.db.execute(
                        "SELECT ts FROM rates WHERE key = ? AND ts > ?"
                        " ORDER BY ts DESC LIMIT 1 OFFSET ?",
                        (key, now - window, limit - 1),
                    ).fetchone()
                    if rows is None:
                        self.db.execute("INSERT INTO rates VALUES (?, ?, ?)", (key, now, tag))
                        waits[key] = 0.0
                    else:
                        waits[key] = max(0.001, rows[0] + window - now)
        except sqlite3.Error as exc:
            raise AuditError(f"the audit log {self.path} cannot count rates: {exc}") from None
        return waits

    def slot_wait(self, key: str, limit: int, window: float) -> float:
        now = time.time()
        try:
            row = self.db.execute(sqlite(rows.SLOT_WAIT), (key, now - window, limit - 1))
            found = row.fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"the audit log {self.path} cannot count rates: {exc}") from None
        return max(0.001, found[0] + window - now) if found else 0.0

    def give_back(self, tag: str) -> None:
        if tag:
            with contextlib.suppress(AuditError):
                self._write("given back slots", [("DELETE FROM rates WHERE tag = ?", (tag,))])

    def replying(self, command_id: int) -> bool:
        """One box, one process: nobody else can take the command over, so the claim is the
        ownership read (no write, no fsync, on the way to every reply)."""
        row = self.db.execute("SELECT owner FROM commands WHERE id = ?", (command_id,)).fetchone()
        return row is None or row[0] in ("", self.replica)

    def reply_failed(self, command_id: int) -> None:
        try:
            self._write(
                "a reply not posted", [(sqlite(rows.UNREPLIED), (command_id, self.replica))]
            )
        except AuditError as exc:
            log.error("%s", exc)

    def let_go(self, command_id: int) -> None:
        try:
            self._write(
                "a command let go",
                [("UPDATE commands SET lease_until = 0 WHERE id = ?", (command_id,))],
            )
        except AuditError as exc:
            log.error("%s", exc)

    def hold(self, command_ids: list[int]) -> None:
        if not command_ids:
            return
        marks = ",".join("?" * len(command_ids))
        try:
            self._write(
                "a renewed hold",
                [
                    (
                        f"UPDATE commands SET lease_until = ? WHERE owner = ? AND id IN ({marks})",
                        (time.time() + self.lease, self.replica, *command_ids),
                    )
                ],
            )
        except AuditError as exc:
            log.error("%s", exc)

    def orphans(self, limit: int = 100) -> list[Orphan]:
        now = time.time()
        found = self.db.execute(
            sqlite(rows.ORPHANS), (now, now - rows.ORPHAN_AGE, self.replica, limit)
        )
        return rows.orphans(found.fetchall())

    def leads(self) -> bool:
        return True  # one box: its one process fires the clocks

    def delivery(self, command_id: int, answer: Answer) -> None:
        """One phone's answer; written with the next ``flush``."""
        a = answer
        self._pending.append(
            (command_id, time.time(), a.extension, a.uri, a.code, a.reason, a.elapsed_ms, a.cause)
        )

    def flush(self) -> None:
        """Write the answers that came in since the last flush, in one transaction."""
        rows, self._pending = self._pending, []
        if not rows:
            return
        try:
            self._write("the phones' answers", [], rows)
        except AuditError as exc:
            log.error("%s", exc)

    def finish(self, command_id: int) -> None:
        """Every phone answered: the answers not yet written, and the command is sent."""
        rows, self._pending = self._pending, []
        sent = [("UPDATE commands SET state = 'sent' WHERE id = ?", (command_id,))]
        try:
            self._write("the end of a send", sent, rows)
        except AuditError as exc:
            log.error("%s", exc)

    def answered(self, key: str) -> None:
        """The reply to the command with this key reached the chat."""
        try:
            self._write(
                "an answer",
                [("INSERT OR IGNORE INTO answered (key, ts) VALUES (?, ?)", (key, time.time()))],
            )
        except AuditError as exc:
            log.error("%s", exc)

    def answering(self, key: str) -> bool:
        try:
            with self.db:
                added = self.db.execute(sqlite(rows.ANSWERING), (key, time.time())).rowcount
        except sqlite3.Error as exc:  # cannot tell: answer
            log.error("the audit log %s cannot record an answer: %s", self.path, exc)
            return True
        return added == 1

    def answer_failed(self, key: str) -> None:
        try:
            self._write("an answer not posted", [(sqlite(rows.UNANSWERED), (key,))])
        except AuditError as exc:
            log.error("%s", exc)

    def cache_directory(self, source: str, ts: float, data: str) -> None:
        """The last good directory from ``source`` (LDAP), for a start while it is down.

        Its own connection: callable from a worker thread, so a megabyte and its fsync
        stay off the event loop while the audit log's connection serves commands.
        """
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
            try:
                with db:
                    db.execute(
                        "INSERT OR REPLACE INTO directory_cache VALUES (?, ?, ?)",
                        (source, ts, data),
                    )
            finally:
                db.close()
        except sqlite3.Error as exc:  # the one in memory still serves; the next sync tries again
            log.error("the audit log %s cannot record the directory cache: %s", self.path, exc)

    def cached_directory(self, source: str) -> tuple[float, str] | None:
        row = self.db.execute(
            "SELECT ts, data FROM directory_cache WHERE source = ?", (source,)
        ).fetchone()
        return (float(row[0]), str(row[1])) if row else None

    def seen(self, key: str, within: float | None = None) -> Seen | None:
        """What is known of a command key, or None for a new command.

        ``within``: seconds a key counts (alerts); older uses of it are not seen.
        """
        since = 0.0 if within is None else time.time() - within
        return rows.seen(self._query, "rowid", key, since)

    def commanded(self, command_id: int) -> Commanded | None:
        """A command by its id (the API's GET /v1/commands/ID), or None."""
        return rows.commanded(self._query, "rowid", command_id)

    def history(
        self, *, chat: str | None, sender_id: str | None, person: str | None, limit: int = 10
    ) -> list[HistoryEntry]:
        """Last sends of one sender (by person, else by chat id), or of everyone."""
        where, args = rows.by_sender(chat, sender_id, person, "c")
        where = f"WHERE {where}" if where else ""
        codes = "GROUP_CONCAT(d.code || ' ' || d.reason, ', ')"
        sql = rows.HISTORY.format(codes=codes, where=where)
        return rows.history(self._query(sql, (*args, limit)))

    def _query(self, sql: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        return self.db.execute(sqlite(sql), args).fetchall()


_INSERT_DELIVERY = (
    "INSERT INTO deliveries (command_id, ts, extension, uri, code, reason, elapsed_ms, cause)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
