"""The store's schema as numbered steps, the same numbers on SQLite and PostgreSQL.

Each step says in both dialects what it adds. A store records the last step it
applied (SQLite: ``PRAGMA user_version``; PostgreSQL: the ``deskbot_schema``
table) and applies the missing ones in order, in one transaction, at start.
SQLite files older than the numbering (version 0 with tables, or version 2
without step 3's column) are brought up by the same steps: a ``CREATE`` is
``IF NOT EXISTS`` and an ``ADD COLUMN`` whose column exists is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Step:
    version: int
    what: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


STEPS = (
    Step(
        1,
        "commands, each phone's answer, answered keys, the directory cache",
        (
            "CREATE TABLE IF NOT EXISTS commands (id INTEGER PRIMARY KEY, ts REAL NOT NULL,"
            " chat TEXT NOT NULL, sender_id TEXT NOT NULL, person TEXT,"
            " place TEXT NOT NULL DEFAULT '', targets TEXT NOT NULL,"
            " text_chars INTEGER NOT NULL, phones INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS deliveries (command_id INTEGER NOT NULL"
            " REFERENCES commands(id), ts REAL NOT NULL, extension TEXT NOT NULL,"
            " uri TEXT NOT NULL, code INTEGER NOT NULL, reason TEXT NOT NULL,"
            " elapsed_ms REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS answered (key TEXT PRIMARY KEY, ts REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS directory_cache (source TEXT PRIMARY KEY,"
            " ts REAL NOT NULL, data TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS commands_sender ON commands(chat, sender_id, id)",
            "CREATE INDEX IF NOT EXISTS deliveries_command ON deliveries(command_id)",
        ),
        (
            "CREATE TABLE commands (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " ts DOUBLE PRECISION NOT NULL, chat TEXT NOT NULL, sender_id TEXT NOT NULL,"
            " person TEXT, place TEXT NOT NULL DEFAULT '', targets TEXT NOT NULL,"
            " text_chars INTEGER NOT NULL, phones INTEGER NOT NULL)",
            "CREATE TABLE deliveries (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " command_id BIGINT NOT NULL REFERENCES commands(id), ts DOUBLE PRECISION NOT NULL,"
            " extension TEXT NOT NULL, uri TEXT NOT NULL, code INTEGER NOT NULL,"
            " reason TEXT NOT NULL, elapsed_ms DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE answered (key TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL)",
            "CREATE TABLE directory_cache (source TEXT PRIMARY KEY,"
            " ts DOUBLE PRECISION NOT NULL, data TEXT NOT NULL)",
            "CREATE INDEX commands_sender ON commands(chat, sender_id, id)",
            "CREATE INDEX deliveries_command ON deliveries(command_id)",
        ),
    ),
    Step(
        2,
        "a command's source key, its state, and the phones it goes to",
        (
            "ALTER TABLE commands ADD COLUMN key TEXT",
            "ALTER TABLE commands ADD COLUMN state TEXT NOT NULL DEFAULT 'sent'",
            "ALTER TABLE commands ADD COLUMN plan TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE deliveries ADD COLUMN cause TEXT NOT NULL DEFAULT 'answered'",
            "CREATE UNIQUE INDEX IF NOT EXISTS commands_key ON commands(key) WHERE key IS NOT NULL",
        ),
        (
            "ALTER TABLE commands ADD COLUMN key TEXT",
            "ALTER TABLE commands ADD COLUMN state TEXT NOT NULL DEFAULT 'sent'",
            "ALTER TABLE commands ADD COLUMN plan TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE deliveries ADD COLUMN cause TEXT NOT NULL DEFAULT 'answered'",
            "CREATE UNIQUE INDEX commands_key ON commands(key) WHERE key IS NOT NULL",
        ),
    ),
    Step(
        3,
        "where a template's or schedule's send came from",
        ("ALTER TABLE commands ADD COLUMN origin TEXT",),
        ("ALTER TABLE commands ADD COLUMN origin TEXT",),
    ),
    Step(
        4,
        "deferred sends and the schedules' marks",
        (
            "CREATE TABLE IF NOT EXISTS deferred (id INTEGER PRIMARY KEY, key TEXT UNIQUE,"
            " created REAL NOT NULL, due REAL NOT NULL, zone TEXT NOT NULL,"
            " chat TEXT NOT NULL, sender_id TEXT NOT NULL, display_name TEXT NOT NULL,"
            " person TEXT, place TEXT NOT NULL, thread TEXT NOT NULL, command TEXT NOT NULL,"
            " state TEXT NOT NULL DEFAULT 'pending')",
            "CREATE INDEX IF NOT EXISTS deferred_due ON deferred(state, due)",
            "CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value REAL NOT NULL)",
        ),
        (
            "CREATE TABLE deferred (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " key TEXT UNIQUE, created DOUBLE PRECISION NOT NULL, due DOUBLE PRECISION NOT NULL,"
            " zone TEXT NOT NULL, chat TEXT NOT NULL, sender_id TEXT NOT NULL,"
            " display_name TEXT NOT NULL, person TEXT, place TEXT NOT NULL,"
            " thread TEXT NOT NULL, command TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending')",
            "CREATE INDEX deferred_due ON deferred(state, due)",
            "CREATE TABLE marks (name TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL)",
        ),
    ),
    Step(
        5,
        "which replica sends a command, until when it holds it, the hold's epoch, its thread",
        (
            "ALTER TABLE commands ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE commands ADD COLUMN lease_until REAL NOT NULL DEFAULT 0",
            "ALTER TABLE commands ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE commands ADD COLUMN thread TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX IF NOT EXISTS commands_lease ON commands(lease_until)"
            " WHERE key IS NOT NULL",
        ),
        (
            "ALTER TABLE commands ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE commands ADD COLUMN lease_until DOUBLE PRECISION NOT NULL DEFAULT 0",
            "ALTER TABLE commands ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE commands ADD COLUMN thread TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX commands_lease ON commands(lease_until) WHERE key IS NOT NULL",
        ),
    ),
    Step(
        6,
        "rate windows that replicas share: one row per message counted",
        (
            "CREATE TABLE IF NOT EXISTS rates (key TEXT NOT NULL, ts REAL NOT NULL,"
            " tag TEXT NOT NULL DEFAULT '')",
            "CREATE INDEX IF NOT EXISTS rates_key ON rates(key, ts)",
        ),
        (
            "CREATE TABLE rates (key TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,"
            " tag TEXT NOT NULL DEFAULT '')",
            "CREATE INDEX rates_key ON rates(key, ts)",
        ),
    ),
    Step(
        7,
        "confirmation requests, where their commands were given, escalations, alert labels",
        (  # files of the first confirmations kept the two tables without the last columns
            "CREATE TABLE IF NOT EXISTS confirms (command_id INTEGER NOT NULL,"
            " extension TEXT NOT NULL, token_hash TEXT UNIQUE, host TEXT NOT NULL DEFAULT '',"
            " format TEXT NOT NULL, expires REAL NOT NULL, state TEXT NOT NULL,"
            " confirmed_at REAL, posted INTEGER NOT NULL DEFAULT 0,"
            " PRIMARY KEY (command_id, extension))",
            "CREATE INDEX IF NOT EXISTS confirms_unposted ON confirms(posted, state)",
            "CREATE TABLE IF NOT EXISTS confirm_threads (command_id INTEGER PRIMARY KEY,"
            " chat TEXT NOT NULL, sender_id TEXT NOT NULL, place TEXT NOT NULL,"
            " thread TEXT NOT NULL, due REAL NOT NULL DEFAULT 0,"
            " summarized INTEGER NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS confirm_threads_due ON confirm_threads(summarized, due)",
            "ALTER TABLE confirm_threads ADD COLUMN escalate_to TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE confirm_threads ADD COLUMN text TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE confirm_threads ADD COLUMN client TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE confirm_threads ADD COLUMN labels TEXT NOT NULL DEFAULT ''",
        ),
        (
            "CREATE TABLE confirms (command_id BIGINT NOT NULL, extension TEXT NOT NULL,"
            " token_hash TEXT UNIQUE, host TEXT NOT NULL DEFAULT '', format TEXT NOT NULL,"
            " expires DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,"
            " confirmed_at DOUBLE PRECISION, posted INTEGER NOT NULL DEFAULT 0,"
            " seq BIGINT GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (command_id, extension))",
            "CREATE INDEX confirms_unposted ON confirms(posted, state)",
            "CREATE TABLE confirm_threads (command_id BIGINT PRIMARY KEY, chat TEXT NOT NULL,"
            " sender_id TEXT NOT NULL, place TEXT NOT NULL, thread TEXT NOT NULL,"
            " due DOUBLE PRECISION NOT NULL DEFAULT 0, summarized INTEGER NOT NULL DEFAULT 0,"
            " escalate_to TEXT NOT NULL DEFAULT '', text TEXT NOT NULL DEFAULT '',"
            " client TEXT NOT NULL DEFAULT '', labels TEXT NOT NULL DEFAULT '')",
            "CREATE INDEX confirm_threads_due ON confirm_threads(summarized, due)",
        ),
    ),
    Step(
        8,
        "the web console's sign-ins (on SQLite made by the console itself before)",
        (
            "CREATE TABLE IF NOT EXISTS sign_ins (id INTEGER PRIMARY KEY, ts REAL NOT NULL,"
            " name TEXT NOT NULL, address TEXT NOT NULL, outcome TEXT NOT NULL)",
        ),
        (
            "CREATE TABLE sign_ins (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " ts DOUBLE PRECISION NOT NULL, name TEXT NOT NULL, address TEXT NOT NULL,"
            " outcome TEXT NOT NULL)",
        ),
    ),
)
LATEST = STEPS[-1].version
