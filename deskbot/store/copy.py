"""Move an SQLite audit log to PostgreSQL, once, before the replicas start on it.

    python -m deskbot.store.copy OLD.sqlite3 [-c CONFIG]

The config's ``[audit] url`` and ``password_env`` name the database. deskbot
is stopped meanwhile; the file is brought to the latest schema step first, the
database is created or upgraded, and every row goes over in one transaction:
commands (with their ids and keys, so a command read again is still
recognised), the phones' answers, answered keys, the LDAP cache, deferred
sends, the schedules' marks and the web console's sign-ins. Rate windows are
not copied (a minute's worth). A database that already holds commands is refused: nothing is merged.
Exit 0 when copied, 2 when nothing was.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from deskbot.store.base import AuditError

# table -> columns copied, in order; ids kept where other rows refer to them
TABLES = {
    "commands": "id, ts, chat, sender_id, person, place, targets, text_chars, phones, key,"
    " state, plan, origin, owner, lease_until, epoch, thread",
    "deliveries": "command_id, ts, extension, uri, code, reason, elapsed_ms, cause",
    "answered": "key, ts",
    "directory_cache": "source, ts, data",
    "deferred": "id, key, created, due, zone, chat, sender_id, display_name, person, place,"
    " thread, command, state",
    "marks": "name, value",
    "sign_ins": "ts, name, address, outcome",
}
KEEP_IDS = ("commands", "deferred")
BATCH = 1000


def copy(source: Path, url: str, password: str | None) -> dict[str, int]:
    """Rows copied per table; AuditError (one line) when nothing was copied."""
    import psycopg

    from deskbot.store.audit import AuditLog
    from deskbot.store.postgres import PostgresLog, one_line

    if not source.is_file():
        raise AuditError(f"{source}: no such file")
    AuditLog(source).close()  # the latest schema step, so every column is there
    PostgresLog(url, password).close()  # the schema, created or upgraded
    counts: dict[str, int] = {}
    try:
        with (
            sqlite3.connect(f"file:{source}?mode=ro", uri=True) as old,
            psycopg.connect(url, password=password, connect_timeout=5) as new,
            new.transaction(),
        ):
            row = new.execute("SELECT count(*) FROM commands").fetchone()
            if row and row[0]:
                raise AuditError(f"the audit log {url} holds {row[0]} commands already")
            for table, columns in TABLES.items():
                counts[table] = _copy_table(old, new, table, columns)
            for table in KEEP_IDS:
                new.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" GREATEST((SELECT max(id) FROM {table}), 1))"
                )
    except (sqlite3.Error, psycopg.Error) as exc:
        raise AuditError(f"copying {source} to {url}: {one_line(exc)}") from None
    return counts


def _copy_table(old: sqlite3.Connection, new: Any, table: str, columns: str) -> int:
    marks = ", ".join(["%s"] * len(columns.split(",")))
    override = " OVERRIDING SYSTEM VALUE" if table in KEEP_IDS else ""
    insert = f"INSERT INTO {table} ({columns}){override} VALUES ({marks})"
    rows = old.execute(f"SELECT {columns} FROM {table} ORDER BY rowid")
    done = 0
    with new.cursor() as cur:
        while batch := rows.fetchmany(BATCH):
            cur.executemany(insert, batch)
            done += len(batch)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskbot.store.copy", description=__doc__)
    parser.add_argument("source", type=Path, help="the SQLite audit log to copy")
    parser.add_argument("-c", "--config", help="the config naming [audit] url (else as deskbot)")
    args = parser.parse_args(argv)
    from deskbot.settings.load import ConfigError, find_path, load
    from deskbot.store.connect import audit_password

    try:
        cfg = load(find_path(args.config), secrets_for=("audit",))
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    if not cfg.settings.audit.url:
        print(f"{cfg.path}: audit.url: not set: nowhere to copy to", file=sys.stderr)
        return 2
    try:
        counts = copy(args.source, cfg.settings.audit.url, audit_password(cfg))
    except AuditError as exc:
        print(f"deskbot: {exc}; nothing was copied", file=sys.stderr)
        return 2
    print(", ".join(f"{n} {table}" for table, n in counts.items()) + " copied")
    return 0


if __name__ == "__main__":
    sys.exit(main())
