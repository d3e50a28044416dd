"""The store's interface on both backends: SQLite (one box) and a real PostgreSQL (replicas).

What one backend records the other records alike: commands with their plans,
each phone's answer, answered keys, a key taken once, history, the LDAP
cache, deferred sends and marks. The schema steps carry the same numbers on
both; an SQLite file from before the numbering is brought up to date. Start-up
and check-config name a database they cannot reach or write in one line, exit 2.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import run_deskbot, write_config
from postgres_server import PASSWORD_ENV, Postgres

from deskbot.store.base import Answer, Deferred, Planned, Taken
from deskbot.store.migrations import LATEST, STEPS

BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
PLAN = [Planned("486", "sip:486@10.0.0.86", "Reception", ""), Planned("487", "sip:487@x", "", "")]


def record(log, key: str | None = "$e1", **extra) -> int:
    fields = dict(
        key=key,
        chat="matrix",
        sender_id="@alice:example.com",
        person="alice",
        place="!room",
        targets="486,487",
        text_chars=5,
        plan=PLAN,
    )
    return log.command(**{**fields, **extra})


@BOTH
def test_a_command_its_answers_and_its_answered_mark_are_read_back_by_another_process(store):
    log = store()
    command_id = record(log)
    log.delivery(command_id, Answer("486", "sip:486@10.0.0.86", 200, "OK", 3.5))
    log.flush()
    log.delivery(command_id, Answer("487", "sip:487@x", 408, "Request Timeout", 5000, "timeout"))
    log.finish(command_id)
    other = store("r2")
    seen = other.seen("$e1")
    assert seen is not None and seen.command_id == command_id and not seen.answered
    assert seen.plan == tuple(PLAN)
    assert [(a.extension, a.code, a.cause) for a in seen.answers] == [
        ("486", 200, "answered"),
        ("487", 408, "timeout"),
    ]
    assert seen.owner == "r1" and seen.lease_until > time.time()
    log.answered("$e1")
    assert other.seen("$e1").answered
    assert other.seen("$new") is None
    log.answered("$help")  # a command that sent nothing, answered
    assert other.seen("$help") == type(seen)(answered=True, command_id=None)


@BOTH
def test_a_key_is_taken_once_and_the_second_process_is_told_so(store):
    first, second = store("r1"), store("r2")
    record(first)
    with pytest.raises(Taken):
        record(second)
    assert first.seen("$e1").owner == "r1"


@BOTH
def test_an_expiring_key_is_given_up_by_an_old_command_only(store):
    log = store()
    old = record(log, key="alert:x")
    with pytest.raises(Taken):  # younger than the window: still taken
        record(log, key="alert:x", reuse_before=time.time() - 60)
    new = record(log, key="alert:x", reuse_before=time.time() + 1)
    assert new != old and log.seen("alert:x").command_id == new


@BOTH
def test_history_shows_each_command_with_its_codes_newest_first(store):
    log = store()
    a = record(log, key=None)
    log.delivery(a, Answer("486", "u", 200, "OK", 1.0))
    log.delivery(a, Answer("487", "u", 404, "Not Found", 1.0))
    log.finish(a)
    record(log, key=None, person="bob", targets="487")
    mine = log.history(chat="matrix", sender_id="x", person="alice")
    assert [(e.who, e.phones, e.delivered, e.answers, e.command_id) for e in mine] == [
        ("alice", 2, 1, "200 OK, 404 Not Found", a)  # its id: the web's History finds its confirms
    ]
    assert [e.who for e in log.history(chat=None, sender_id=None, person=None)] == [
        "bob",
        "alice",
    ]


@BOTH
def test_the_directory_cache_and_marks_survive_a_restart(store):
    log = store()
    log.cache_directory("ldap", 12.5, '{"people": {}}')
    log.cache_directory("ldap", 13.5, '{"people": {"a": 1}}')
    later = log.deferred_sends()
    later.mark("schedules", 99.25)
    again = store("r2")
    assert again.cached_directory("ldap") == (13.5, '{"people": {"a": 1}}')
    assert again.cached_directory("none") is None
    assert again.deferred_sends().marked("schedules") == 99.25
    assert again.deferred_sends().marked("other") is None


@BOTH
def test_a_deferred_send_is_kept_found_due_and_closed_once(store):
    later = store().deferred_sends()
    plan = Deferred(0, time.time() + 60, "Europe/Berlin", "matrix", "@a:x", "Alice", "alice",
                    "!room", "$thread", "486 lunch")  # fmt: skip
    first = later.add("$cmd", plan)
    assert later.add("$cmd", plan) == first  # the same command read again
    assert later.get(first).command == "486 lunch"
    assert later.due(time.time()) == []
    assert [d.id for d in later.due(time.time() + 120)] == [first]
    assert [d.id for d in later.pending(None, None, "alice")] == [first]
    assert later.pending("slack", "U1", None) == []
    other = store("r2").deferred_sends()
    assert other.close(first, "sent") is True
    assert later.close(first, "sent") is False  # of two closing it, one moves it
    assert later.get(first) is None


@BOTH
def test_the_schema_is_at_the_latest_step_on_both_backends(store, backend, tmp_path, request):
    store()
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "audit.sqlite3") as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    else:
        pg: Postgres = request.getfixturevalue("postgres")
        url = store().path
        rows = pg.query(url.rsplit("/", 1)[1], "SELECT version FROM deskbot_schema ORDER BY 1")
        assert [int(r[0]) for r in rows] == [0, *(s.version for s in STEPS)]  # 0: the last start


def test_an_sqlite_file_from_before_the_numbering_is_brought_up_and_keeps_its_rows(tmp_path):
    from deskbot.store.audit import AuditLog

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # what a deskbot of the first round wrote
        db.executescript("""
            CREATE TABLE commands (id INTEGER PRIMARY KEY, ts REAL NOT NULL, chat TEXT NOT NULL,
                sender_id TEXT NOT NULL, person TEXT, place TEXT NOT NULL DEFAULT '',
                targets TEXT NOT NULL, text_chars INTEGER NOT NULL, phones INTEGER NOT NULL);
            CREATE TABLE deliveries (command_id INTEGER NOT NULL, ts REAL NOT NULL,
                extension TEXT NOT NULL, uri TEXT NOT NULL, code INTEGER NOT NULL,
                reason TEXT NOT NULL, elapsed_ms REAL NOT NULL);
            INSERT INTO commands VALUES (1, 1.0, 'slack', 'U1', 'alice', '', '486', 4, 1);
            INSERT INTO deliveries VALUES (1, 1.0, '486', 'sip:486@x', 200, 'OK', 2.0);
        """)
    log = AuditLog(path)
    [entry] = log.history(chat=None, sender_id=None, person=None)
    assert (entry.who, entry.answers) == ("alice", "200 OK")
    assert record(log) == 2
    log.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST


CONFIG = """
[sip]
listen = "127.0.0.1:0"
[health]
listen = "127.0.0.1:0"
[audit]
url = "{url}"
password_env = "{env}"
[phones.486]
uri = "sip:486@127.0.0.1:9"
"""


def test_check_config_reaches_and_writes_the_database_and_says_so(postgres, tmp_path):
    config = write_config(
        tmp_path / "c.toml", CONFIG.format(url=postgres.database(), env=PASSWORD_ENV)
    )
    done = run_deskbot("check-config", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("; audit log on PostgreSQL")


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("problem", ["unreachable", "wrong password", "read-only"])
def test_a_database_that_cannot_be_reached_or_written_is_named_in_one_line_exit_2(
    postgres, tmp_path: Path, command: str, problem: str
):
    url, env = postgres.database(), {}
    if problem == "unreachable":
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nobody listens there once closed
        url = f"postgresql://deskbot@127.0.0.1:{port}/nowhere"
    elif problem == "wrong password":
        env = {PASSWORD_ENV: "not-the-password"}
    else:
        name = url.rsplit("/", 1)[1]
        postgres.psql("postgres", f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    config = write_config(tmp_path / "c.toml", CONFIG.format(url=url, env=PASSWORD_ENV))
    done = run_deskbot(command, "-c", str(config), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    out = (done.stdout + done.stderr).strip()
    [line] = [ln for ln in out.splitlines() if url in ln]
    assert {
        "unreachable": "Connection refused",
        "wrong password": "password authentication failed",
        "read-only": "read-only transaction",
    }[problem] in line
    assert "not-the-password" not in out and "db-secret" not in out


@BOTH
def test_rate_slots_are_counted_for_every_process_of_the_store(store):
    a, b = store("r1"), store("r2")
    assert a.take_slots(["phone:486", "phone:487"], 2, 60) == {"phone:486": 0, "phone:487": 0}
    assert b.take_slots(["phone:486"], 2, 60) == {"phone:486": 0}
    waits = a.take_slots(["phone:486", "phone:487"], 2, 60)
    assert waits["phone:487"] == 0 and 59 < waits["phone:486"] <= 60
    assert b.take_slots(["phone:486"], 2, 1e-6)["phone:486"] == 0  # a short window: free


@BOTH
def test_a_look_at_a_rate_slot_tells_the_wait_and_takes_none(store):
    a, b = store("r1"), store("r2")
    assert b.slot_wait("sender:u1", 2, 60) == 0
    a.take_slots(["sender:u1"], 2, 60)
    for _ in range(3):  # looking again and again takes nothing
        assert b.slot_wait("sender:u1", 2, 60) == 0
    a.take_slots(["sender:u1"], 2, 60)
    assert 59 < b.slot_wait("sender:u1", 2, 60) <= 60
    assert b.slot_wait("sender:u2", 2, 60) == 0


@BOTH
def test_sign_ins_are_kept_cut_to_size_and_read_back_by_another_process(store):
    store("r1").sign_ins().record("x" * 500, "10.0.0.1" * 20, "wrong-password")
    store("r2").sign_ins().record("alice", "::1", "signed-in")
    rows = store("r3").sign_ins().recent(10)
    assert [r[1:] for r in rows] == [
        ("alice", "::1", "signed-in"),
        ("x" * 64, ("10.0.0.1" * 20)[:64], "wrong-password"),
    ]
    assert time.time() - 60 < rows[0][0] <= time.time()


def test_an_sqlite_log_moves_to_postgresql_and_its_keys_are_still_recognised(
    postgres, tmp_path: Path
):
    import subprocess
    import sys

    from deskbot.store.audit import AuditLog
    from deskbot.store.postgres import PostgresLog

    old = AuditLog(tmp_path / "old.sqlite3")
    first = record(old)
    old.delivery(first, Answer("486", "sip:486@10.0.0.86", 200, "OK", 3.5))
    old.finish(first)
    old.answered("$e1")
    old.cache_directory("ldap", 5.0, "{}")
    later = old.deferred_sends()
    later.mark("schedules", 7.0)
    planned = later.add("$d", Deferred(0, 9e9, "", "matrix", "@a:x", "A", None, "!r", "", "486 x"))
    old.sign_ins().record("alice", "10.0.0.9", "signed-in")
    old.close()
    url = postgres.database()
    config = write_config(tmp_path / "c.toml", CONFIG.format(url=url, env=PASSWORD_ENV))
    move = [sys.executable, "-m", "deskbot.store.copy", str(tmp_path / "old.sqlite3")]
    done = subprocess.run([*move, "-c", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "1 commands, 1 deliveries, 1 answered, 1 directory_cache, 1 deferred, 1 marks,"
        " 1 sign_ins copied"
    )
    new = PostgresLog(url, postgres_password())
    seen = new.seen("$e1")
    assert seen is not None and seen.answered and seen.command_id == first
    assert [(a.extension, a.code) for a in seen.answers] == [("486", 200)]
    assert new.cached_directory("ldap") == (5.0, "{}")
    assert new.deferred_sends().marked("schedules") == 7.0
    assert new.deferred_sends().get(planned).command == "486 x"
    assert [r[1:] for r in new.sign_ins().recent()] == [("alice", "10.0.0.9", "signed-in")]
    assert record(new, key="$e2") > first  # new ids after the copied ones
    new.close()
    again = subprocess.run([*move, "-c", str(config)], capture_output=True, text=True)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"deskbot: the audit log {url} holds 2 commands already; nothing was copied"
    )


def postgres_password() -> str:
    from postgres_server import PASSWORD

    return PASSWORD
