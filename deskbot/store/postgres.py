"""The audit log and idempotency keys in PostgreSQL: one store that replicas share.

The same values and interface as the SQLite backend (``deskbot.store.audit``),
the same numbered schema steps (``deskbot.store.migrations``). The key is the
gate between replicas: a command is recorded by ``INSERT ... ON CONFLICT DO
NOTHING`` on its unique key, and the replica whose insert wins does the work;
the other gets ``Taken`` and stays silent.

Blocking: the calls whose answer the relay needs before it may go on (``seen``,
``command``, the rate slots, the reads) and the end of a send (what the reply
will say must be durable first) are one round trip each, on a pooled
connection, each bounded by ``statement_timeout``. The writes nothing waits for
(phones' answers as they come, answered keys, letting a webhook's command go)
go, in order, to one writer thread when they are called from the event loop,
so a slow database stalls no chat while a broadcast's answers come in.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from deskbot.store import rows
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

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from deskbot.store.pgconfirms import PostgresConfirmations
    from deskbot.store.pglater import PostgresLater
    from deskbot.store.signins import PostgresSignIns

log = logging.getLogger("deskbot.audit")

STATEMENT_TIMEOUT_MS = 2000  # as SQLite's busy timeout: then the command is refused
CONNECT_TIMEOUT = 5  # seconds, at start and for a new pooled connection
POOL_SIZE = 4
MIGRATION_LOCK = 0x6465736B  # "desk": one replica upgrades the schema at a time
LEADER_LOCK = 0x64657363  # "desc": the replica holding it fires the clocks
# the reply is this replica's to post: one conditional update of the command's row, so of
# an owner posting and a replica taking over (``rows.CLAIM``, refused once it is 'replied')
# exactly one wins (SQLite has one process: there the ownership read is the claim)
REPLYING = (
    "UPDATE commands SET state = 'replied'"
    " WHERE id = %s AND owner IN ('', %s) AND state <> 'replied'"
)
PRUNE_ONE_IN = 100  # rate rows older than an hour go in about one call of this many


def one_line(exc: BaseException) -> str:
    """A driver error as one line (psycopg's span several, with hints)."""
    text = str(exc) or type(exc).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


class PostgresLog:
    shared = True

    def __init__(
        self, url: str, password: str | None, replica: str = "", lease: float = 10.0
    ) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self.path = url  # the URL carries no password (settings refuse one)
        self.replica = replica
        self.lease = lease
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": f"deskbot {replica}"[:63],
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
            f" -c lock_timeout={STATEMENT_TIMEOUT_MS}",
        }
        if password:
            self._kwargs["password"] = password
        try:  # one plain connection first: its error says why (refused, login, no database)
            with psycopg.connect(url, **self._kwargs) as conn:
                self._migrate(conn)
        except psycopg.Error as exc:
            raise AuditError(f"the audit log {url}: {one_line(exc)}") from None
        self.pool: ConnectionPool[Any] = ConnectionPool(
            url,
            kwargs=self._kwargs,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=STATEMENT_TIMEOUT_MS / 1000,
            open=True,
            name="deskbot-audit",
        )
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="deskbot-audit")
        self._queued = 0  # writes handed to the writer and not done yet
        self._lock = threading.Lock()
        self._leader: psycopg.Connection[Any] | None = None  # holds the clocks' lock
        self._leading = threading.Lock()  # one leadership check at a time
        self._pending: list[tuple[int, float, str, str, int, str, float, str]] = []
        # each transaction's seconds and whether it was written (/metrics), as on SQLite
        self.on_write: list[Callable[[float, bool], None]] = []

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        """The schema steps this database lacks, by one replica at a time; fails if read-only."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS deskbot_schema"
                " (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
            )
            row = conn.execute("SELECT max(version) FROM deskbot_schema").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            for step in STEPS:
                if step.version > version:
                    for statement in step.postgres:
                        conn.execute(statement.encode())
                    conn.execute(
                        "INSERT INTO deskbot_schema VALUES (%s, %s)", (step.version, time.time())
                    )
            # a write on every start: a read-only database or login is named now, not mid-send
            conn.execute(
                "INSERT INTO deskbot_schema VALUES (0, %s)"
                " ON CONFLICT (version) DO UPDATE SET applied = excluded.applied",
                (time.time(),),
            )
        if version > LATEST:
            log.warning("the audit log %s is from a newer deskbot (schema %d)", self.path, version)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.flush()
        self.pool.close()
        if self._leader is not None:
            self._leader.close()  # the clocks' lock goes with it

    def deferred_sends(self) -> PostgresLater:
        from deskbot.store.pglater import PostgresLater

        return PostgresLater(self)

    def sign_ins(self) -> PostgresSignIns:
        from deskbot.store.signins import PostgresSignIns

        return PostgresSignIns(self)

    # -- running SQL -------------------------------------------------------------------
    def run(self, what: str, body: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """``body(conn)`` in one transaction; AuditError naming ``what`` if it fails."""
        import psycopg
        from psycopg_pool import PoolTimeout

        started, ok = time.perf_counter(), False
        try:
            with self.pool.connection() as conn, conn.transaction():
                result = body(conn)
            ok = True
            return result
        except Taken:
            ok = True  # the store answered: another replica has the key
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            raise AuditError(f"the audit log {self.path} cannot {what}: {one_line(exc)}") from None
        finally:
            for listener in self.on_write:
                listener(time.perf_counter() - started, ok)

    def _in_order(self, what: str, body: Callable[[psycopg.Connection[Any]], Any]) -> None:
        """A write nothing waits for: on the writer thread from the event loop, else now."""

        def write() -> None:
            try:
                self.run(what, body)
            except AuditError as exc:
                log.error("%s", exc)

        if _on_event_loop():
            with self._lock:
                self._queued += 1
            try:
                queued = self._writer.submit(write)
            except RuntimeError:  # shut down: write now
                self._done(None)
            else:  # outside the lock: a write already done calls back at once, in this thread
                queued.add_done_callback(self._done)
                return
        write()

    def _done(self, _: object) -> None:
        with self._lock:
            self._queued -= 1

    def _settle(self) -> None:
        """Before a read: this replica's own writes still queued go first (read your writes)."""
        if self._queued:
            with contextlib.suppress(Exception):  # shut down or slow: read what is there
                self._writer.submit(lambda: None).result(timeout=STATEMENT_TIMEOUT_MS / 1000)

    # -- the interface ---------------------------------------------------------------
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
        """Record a command before its first message leaves; its id. ``Taken``: another
        replica recorded this key first (``reuse_before`` as in the SQLite backend)."""
        now = time.time()

        def insert(conn: psycopg.Connection[Any]) -> int:
            if key and reuse_before is not None:
                conn.execute(
                    "UPDATE commands SET key = key || '#' || id WHERE key = %s AND ts < %s",
                    (key, reuse_before),
                )
            values = rows.command_values(
                self.replica, now + self.lease, now, key, chat, sender_id, person, place,
                targets, text_chars, plan, origin, thread,
            )  # fmt: skip
            row = conn.execute(
                rows.INSERT_COMMAND + " ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING"
                " RETURNING id",
                values,
            ).fetchone()
            if row is None:
                raise Taken(f"command {key} was recorded by another replica")
            return int(row[0])

        return int(self.run("record the command", insert))

    def claim(self, command_id: int, epoch: int) -> bool:
        """Take over a command whose hold expired (or that this replica held before)."""
        now = time.time()
        try:
            changed = self.run(
                "record a take-over",
                lambda c: (
                    c.execute(
                        rows.CLAIM,
                        (
                            self.replica,
                            now + self.lease,
                            command_id,
                            epoch,
                            now,
                            self.replica,
                            self.replica,
                        ),
                    ).rowcount
                ),
            )
        except AuditError as exc:
            log.error("%s", exc)
            return False
        return int(changed) == 1

    def take_slots(
        self, keys: list[str], limit: int, window: float, tag: str = ""
    ) -> dict[str, float]:
        """Under one advisory lock per key (in one order: no deadlock), so two replicas
        counting the same phone at once see each other's rows."""
        wanted = sorted(set(keys))
        now = time.time()

        def take(conn: psycopg.Connection[Any]) -> dict[str, float]:
            conn.execute(
                "SELECT pg_advisory_xact_lock(h) FROM"
                " (SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) k ORDER BY h) x",
                (wanted,),
            )
            full = conn.execute(  # the limit-th newest row in the window, per key that is full
                "SELECT key, ts FROM (SELECT key, ts, row_number() OVER"
                " (PARTITION BY key ORDER BY ts DESC) AS n FROM rates"
                " WHERE key = ANY(%s) AND ts > %s) r WHERE n = %s",
                (wanted, now - window, limit),
            ).fetchall()
            waits = {k: max(0.001, float(ts) + window - now) for k, ts in full}
            free = [k for k in wanted if k not in waits]
            if free:
                conn.execute(
                    "INSERT INTO rates (key, ts, tag) SELECT k, %s, %s FROM unnest(%s::text[]) k",
                    (now, tag, free),
                )
            if secrets.randbelow(PRUNE_ONE_IN) == 0:
                conn.execute("DELETE FROM rates WHERE ts < %s", (now - 3600,))
            return {k: waits.get(k, 0.0) for k in wanted}

        result: dict[str, float] = self.run("count rates", take)
        return result

    def slot_wait(self, key: str, limit: int, window: float) -> float:
        """One read, no lock: a look before costly work; ``take_slots`` decides."""
        now = time.time()
        found = self._read(rows.SLOT_WAIT, (key, now - window, limit - 1))
        return max(0.001, float(found[0][0]) + window - now) if found else 0.0

    def give_back(self, tag: str) -> None:
        """At once (one round trip, only when a key was taken): the count is right for the
        next command of the burst that both replicas are reading."""
        if tag:
            try:
                self.run(
                    "give slots back",
                    lambda c: c.execute("DELETE FROM rates WHERE tag = %s", (tag,)),
                )
            except AuditError as exc:
                log.error("%s", exc)

    def replying(self, command_id: int) -> bool:
        """One conditional update, at once: a take-over is refused from now on."""
        try:
            changed = self.run(
                "record a reply",
                lambda c: c.execute(REPLYING, (command_id, self.replica)).rowcount,
            )
        except AuditError as exc:  # cannot tell: answer (a take-over needs the store too)
            log.error("%s", exc)
            return True
        return int(changed) == 1

    def reply_failed(self, command_id: int) -> None:
        try:
            self.run(
                "record a reply not posted",
                lambda c: c.execute(rows.UNREPLIED, (command_id, self.replica)),
            )
        except AuditError as exc:
            log.error("%s", exc)

    def let_go(self, command_id: int) -> None:
        self._in_order(
            "let a command go",
            lambda c: c.execute(
                "UPDATE commands SET lease_until = 0 WHERE id = %s AND owner = %s",
                (command_id, self.replica),
            ),
        )

    def hold(self, command_ids: list[int]) -> None:
        """Renew the hold (called from a worker thread by the service, every lease / 3)."""
        if command_ids:
            until = time.time() + self.lease
            try:
                self.run(
                    "renew a hold",
                    lambda c: c.execute(
                        "UPDATE commands SET lease_until = %s WHERE owner = %s AND id = ANY(%s)",
                        (until, self.replica, command_ids),
                    ),
                )
            except AuditError as exc:
                log.error("%s", exc)

    def orphans(self, limit: int = 100) -> list[Orphan]:
        now = time.time()
        return rows.orphans(
            self._read(rows.ORPHANS, (now, now - rows.ORPHAN_AGE, self.replica, limit))
        )

    def leads(self) -> bool:
        """The clocks' advisory lock, on a connection of its own: the server frees it when
        this process or its connection dies, and another replica takes it on its next try."""
        import psycopg

        with self._leading:
            conn = self._leader
            if conn is not None and not conn.closed:
                try:
                    conn.execute("SELECT 1")
                    return True
                except psycopg.Error:
                    conn.close()
            self._leader = None
            try:
                conn = psycopg.connect(self.path, **self._kwargs)
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
            except psycopg.Error as exc:
                log.warning("the audit log %s: no leader check: %s", self.path, one_line(exc))
                return False
            if row and row[0]:
                self._leader = conn
                return True
            conn.close()
            return False

    def delivery(self, command_id: int, answer: Answer) -> None:
        """One phone's answer; written with the next ``flush``."""
        a = answer
        self._pending.append(
            (command_id, time.time(), a.extension, a.uri, a.code, a.reason, a.elapsed_ms, a.cause)
        )

    def _deliveries(self) -> Callable[[psycopg.Connection[Any]], None]:
        rows, self._pending = self._pending, []

        owner = self.replica

        def write(conn: psycopg.Connection[Any]) -> None:
            if rows:  # fenced: none once another replica took the command over
                with conn.cursor() as cur:
                    cur.executemany(_INSERT_DELIVERY, [(*r, r[0], owner) for r in rows])

        return write

    def flush(self) -> None:
        """Write the answers that came in since the last flush, in one transaction."""
        if self._pending:
            self._in_order("record the phones' answers", self._deliveries())

    def finish(self, command_id: int) -> None:
        """Every phone answered: the answers not yet written, and the command is sent.

        At once, not on the writer thread (one round trip per command): the reply that
        follows must not tell the chat more than the log knows, or a replica taking the
        command over after a crash would answer it differently.
        """
        deliveries = self._deliveries()

        def write(conn: psycopg.Connection[Any]) -> None:
            deliveries(conn)
            conn.execute(
                "UPDATE commands SET state = 'sent' WHERE id = %s AND owner = %s",
                (command_id, self.replica),
            )

        self._settle()  # the answers flushed before go first
        try:
            self.run("record the end of a send", write)
        except AuditError as exc:
            log.error("%s", exc)

    def answered(self, key: str) -> None:
        """The reply to the command with this key reached the chat."""
        now = time.time()
        self._in_order(
            "record an answer",
            lambda conn: conn.execute(
                "INSERT INTO answered (key, ts) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (key, now),
            ),
        )

    def answering(self, key: str) -> bool:
        """At once, one round trip: the insert that wins answers."""
        try:
            added = self.run(
                "record an answer",
                lambda c: c.execute(rows.ANSWERING, (key, time.time())).rowcount,
            )
        except AuditError as exc:  # cannot tell: answer
            log.error("%s", exc)
            return True
        return int(added) == 1

    def answer_failed(self, key: str) -> None:
        try:
            self.run("record an answer not posted", lambda c: c.execute(rows.UNANSWERED, (key,)))
        except AuditError as exc:
            log.error("%s", exc)

    def cache_directory(self, source: str, ts: float, data: str) -> None:
        """The last good directory from ``source`` (LDAP); callable from a worker thread."""
        try:
            self.run(
                "record the directory cache",
                lambda conn: conn.execute(
                    "INSERT INTO directory_cache VALUES (%s, %s, %s) ON CONFLICT (source)"
                    " DO UPDATE SET ts = excluded.ts, data = excluded.data",
                    (source, ts, data),
                ),
            )
        except AuditError as exc:  # the one in memory still serves; the next sync tries again
            log.error("%s", exc)

    def cached_directory(self, source: str) -> tuple[float, str] | None:
        row = self._read("SELECT ts, data FROM directory_cache WHERE source = %s", (source,))
        return (float(row[0][0]), str(row[0][1])) if row else None

    def _read(self, sql: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        self._settle()
        rows: list[tuple[Any, ...]] = self.run("be read", lambda c: c.execute(sql, args).fetchall())
        return rows

    def confirmations(self) -> PostgresConfirmations:
        """The confirmation requests, in the same database."""
        from deskbot.store.pgconfirms import PostgresConfirmations

        return PostgresConfirmations(self)

    def commanded(self, command_id: int) -> Commanded | None:
        """A command by its id (the API's GET /v1/commands/ID), or None."""
        self._settle()
        found: Commanded | None = self.run(
            "read a command", lambda c: rows.commanded(_query(c), "seq", command_id)
        )
        return found

    def seen(self, key: str, within: float | None = None) -> Seen | None:
        """What is known of a command key, or None for a new command (one transaction)."""
        since = 0.0 if within is None else time.time() - within
        self._settle()
        found: Seen | None = self.run("be read", lambda c: rows.seen(_query(c), "seq", key, since))
        return found

    def history(
        self, *, chat: str | None, sender_id: str | None, person: str | None, limit: int = 10
    ) -> list[HistoryEntry]:
        """Last sends of one sender (by person, else by chat id), or of everyone."""
        where, args = rows.by_sender(chat, sender_id, person, "c")
        where = f"WHERE {where}" if where else ""
        codes = "string_agg(d.code || ' ' || d.reason, ', ' ORDER BY d.seq)"
        sql = rows.HISTORY.format(codes=codes, where=where)
        return rows.history(self._read(sql, (*args, limit)))


def _query(conn: psycopg.Connection[Any]) -> rows.Query:
    return lambda sql, args: conn.execute(sql.encode(), args).fetchall()


def _on_event_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_INSERT_DELIVERY = (
    "INSERT INTO deliveries (command_id, ts, extension, uri, code, reason, elapsed_ms, cause)"
    " SELECT %s, %s, %s, %s, %s, %s, %s, %s"
    " WHERE EXISTS (SELECT 1 FROM commands WHERE id = %s AND owner = %s)"
)
