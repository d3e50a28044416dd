"""What both backends read and write alike: the shared SQL and the rows it gives back.

The statements are written with ``%s`` placeholders (PostgreSQL's); the
SQLite backend swaps them for ``?`` (``sqlite``). A reader takes a ``Query``
(SQL and arguments in, rows out) so that each backend runs it its own way:
SQLite on its one connection, PostgreSQL in one transaction of a pooled one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from deskbot.store.base import Answer, Commanded, HistoryEntry, Orphan, Planned, Seen

Query = Callable[[str, Sequence[object]], list[tuple[Any, ...]]]

# a take-over: at the epoch seen, and expired (or this replica's from before a restart);
# the claimer answers from the log at once, so it claims the reply with it. A reply
# another replica claimed is refused; this replica's own, after a restart, is not (a
# Matrix reply goes again with the same transaction id: the homeserver keeps one)
CLAIM = (
    "UPDATE commands SET owner = %s, epoch = epoch + 1, lease_until = %s, state = 'replied'"
    " WHERE id = %s AND epoch = %s AND (lease_until < %s OR owner IN ('', %s))"
    " AND (state <> 'replied' OR owner = %s)"
)
UNREPLIED = "UPDATE commands SET state = 'sent' WHERE id = %s AND owner = %s AND state = 'replied'"
ANSWERING = "INSERT INTO answered (key, ts) VALUES (%s, %s) ON CONFLICT DO NOTHING"
UNANSWERED = "DELETE FROM answered WHERE key = %s"
# the limit-th newest slot of a key in its window: while there is one, the key is full
SLOT_WAIT = "SELECT ts FROM rates WHERE key = %s AND ts > %s ORDER BY ts DESC LIMIT 1 OFFSET %s"
ORPHAN_AGE = 3600.0  # seconds: older unanswered commands are left alone
ORPHANS = (
    "SELECT id, key, chat, sender_id, place, thread, epoch FROM commands c"
    " WHERE key IS NOT NULL AND lease_until > 0 AND lease_until < %s AND ts > %s"
    " AND (state <> 'replied' OR owner = %s)"
    " AND NOT EXISTS (SELECT 1 FROM answered a WHERE a.key = c.key) ORDER BY id LIMIT %s"
)
INSERT_COMMAND = (
    "INSERT INTO commands (ts, chat, sender_id, person, place, targets, text_chars,"
    " phones, key, state, plan, origin, owner, lease_until, thread)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'sending', %s, %s, %s, %s, %s)"
)
DEFERRED_COLUMNS = "id, due, zone, chat, sender_id, display_name, person, place, thread, command"
MARK = (
    "INSERT INTO marks (name, value) VALUES (%s, %s)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)
INSERT_DEFERRED = (
    "INSERT INTO deferred (key, created, due, zone, chat, sender_id, display_name, person,"
    " place, thread, command) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
MARKED = "SELECT value FROM marks WHERE name = %s"
DEFERRED_OF_KEY = "SELECT id FROM deferred WHERE key = %s"
PENDING = f"SELECT {DEFERRED_COLUMNS} FROM deferred WHERE state = 'pending'"
PENDING_ONE = f"{PENDING} AND id = %s"
PENDING_DUE = f"{PENDING} AND due <= %s ORDER BY due, id"
CLOSE_DEFERRED = "UPDATE deferred SET state = %s, command = '' WHERE id = %s AND state = 'pending'"
# each phone's answer in the order it came (SQLite: rowid; PostgreSQL: seq)
ANSWERS = (
    "SELECT extension, uri, code, reason, elapsed_ms, cause FROM deliveries"
    " WHERE command_id = %s ORDER BY {order}"
)
# one sender's sends with their phones' answers; {where} and the dialect's text aggregate
HISTORY = """SELECT c.ts, COALESCE(c.person, c.chat || ':' || c.sender_id), c.targets,
       c.text_chars, c.phones, SUM(CASE WHEN d.code BETWEEN 200 AND 299 THEN 1 ELSE 0 END),
       {codes}, c.id
FROM commands c LEFT JOIN deliveries d ON d.command_id = c.id
{where} GROUP BY c.id ORDER BY c.id DESC LIMIT %s"""


def sqlite(sql: str) -> str:
    """A shared statement in SQLite's placeholders."""
    return sql.replace("%s", "?")


def command_values(
    replica: str,
    until: float,
    now: float,
    key: str | None,
    chat: str,
    sender_id: str,
    person: str | None,
    place: str,
    targets: str,
    text_chars: int,
    plan: Sequence[Planned],
    origin: str,
    thread: str,
) -> tuple[object, ...]:
    """``INSERT_COMMAND``'s values: a command as recorded before its first message."""
    return (
        now, chat, sender_id, person, place, targets, text_chars, len(plan), key or None,
        plan_text(plan), origin or None, replica, until, thread,
    )  # fmt: skip


def plan_of(text: str) -> tuple[Planned, ...]:
    return tuple(Planned(*map(str, p)) for p in json.loads(text))


def plan_text(plan: Sequence[Planned]) -> str:
    return json.dumps([[p.extension, p.uri, p.label, p.skipped] for p in plan])


def seen(query: Query, order: str, key: str, since: float) -> Seen | None:
    """What is known of a command key used since ``since``, or None for a new command."""
    answered = query("SELECT 1 FROM answered WHERE key = %s AND ts >= %s", (key, since))
    rows = query(
        "SELECT id, plan, owner, lease_until, epoch FROM commands WHERE key = %s AND ts >= %s",
        (key, since),
    )
    if not rows:
        return Seen(answered=True, command_id=None) if answered else None
    command_id, plan, owner, lease_until, epoch = rows[0]
    return Seen(
        bool(answered),
        int(command_id),
        plan_of(plan),
        answers(query, order, int(command_id)),
        str(owner),
        float(lease_until),
        int(epoch),
    )


def commanded(query: Query, order: str, command_id: int) -> Commanded | None:
    rows = query("SELECT chat, sender_id, plan FROM commands WHERE id = %s", (command_id,))
    if not rows:
        return None
    chat, sender_id, plan = rows[0]
    return Commanded(
        command_id, str(chat), str(sender_id), plan_of(plan), answers(query, order, command_id)
    )


def answers(query: Query, order: str, command_id: int) -> tuple[Answer, ...]:
    return tuple(Answer(*r) for r in query(ANSWERS.format(order=order), (command_id,)))


def by_sender(
    chat: str | None, sender_id: str | None, person: str | None, table: str = ""
) -> tuple[str, tuple[str, ...]]:
    """The condition for one sender's rows (by person, else by chat id); "" for everyone's."""
    t = f"{table}." if table else ""
    if person:
        return f"{t}person = %s", (person,)
    if chat and sender_id:
        return f"{t}chat = %s AND {t}sender_id = %s", (chat, sender_id)
    return "", ()


def history(rows: list[tuple[Any, ...]]) -> list[HistoryEntry]:
    return [
        HistoryEntry(float(r[0]), r[1], r[2], r[3], r[4], int(r[5] or 0), r[6] or "", int(r[7]))
        for r in rows
    ]


def orphans(rows: list[tuple[Any, ...]]) -> list[Orphan]:
    return [Orphan(int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6])) for r in rows]
