"""Crashes at every point of a command, against a real Synapse and SIPp phones.

deskbot is killed (SIGKILL to its whole process group: deskbot and its SIP
worker) at each point, then started again. Whatever the point, the command is
answered exactly once in its thread and each phone gets the text at most once
(counted as distinct Call-IDs in SIPp's message trace); what the answer says
about a phone matches what that phone got.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SippPhone, phone_got, wait_for
from matrix_people import Deskbot, alice_in_a_room_with_the_bot, text_of
from matrix_server import Account, Synapse
from postgres_server import PASSWORD_ENV, Postgres

SLOW_MS = 1500  # the second phone answers after this long: a window to crash in mid-send


def calls(phone: SippPhone) -> int:
    """How many MESSAGEs the phone got (conftest's phone_got: retransmissions once)."""
    return len(phone_got(phone))


def sqlite_has(audit: Path) -> Callable[[str], bool]:
    """Whether a query finds a row in the audit file (False while deskbot has not made it)."""

    def has(sql: str) -> bool:
        if not audit.exists():
            return False
        with sqlite3.connect(audit) as db:
            return db.execute(sql).fetchone() is not None

    return has


# point -> (what the fast phone 486 got, what the slow phone 487 got, what the reply says)
EXPECTED = {
    "before-record": (1, 1, ["✅ 486 (Reception): 200 OK", "✅ 487 (Lab): 200 OK"]),
    "after-record": (0, 0, ["⚠️ 486 (Reception): no answer", "⚠️ 487 (Lab): no answer"]),
    "mid-send": (1, 1, ["✅ 486 (Reception): 200 OK", "⚠️ 487 (Lab): no answer"]),
    "after-send": (1, 1, ["✅ 486 (Reception): 200 OK", "✅ 487 (Lab): 200 OK"]),
    "after-reply": (1, 1, ["✅ 486 (Reception): 200 OK", "✅ 487 (Lab): 200 OK"]),
    "after-answered": (1, 1, ["✅ 486 (Reception): 200 OK", "✅ 487 (Lab): 200 OK"]),
}


async def crash_and_restart(
    point: str, run: Deskbot, alice, room: str, phones: tuple, has: Callable[[str], bool]
) -> None:
    """Kill deskbot at ``point`` (armed, or by hand mid-send), start it again, and check
    what the chat and the phones saw against EXPECTED; ``has`` reads the audit log."""
    fast, slow = phones
    if point != "mid-send":
        run.env["DESKBOT_FAILPOINT"] = point
        run.env["DESKBOT_FAILPOINT_TEST"] = "1"  # a test asks: armed
    run.start()

    command = await alice.say(room, "!deskphone 486,487 evacuate by the stairs")
    if point == "mid-send":  # the fast phone answered and is recorded, the slow one not yet
        recorded = "SELECT 1 FROM deliveries WHERE extension = '486'"
        wait_for(lambda: calls(slow) == 1 and has(recorded), what="mid-send")
        assert run.proc is not None
        os.killpg(run.proc.pid, signal.SIGKILL)
    assert run.proc is not None
    wait_for(lambda: run.proc.poll() is not None, what="deskbot to die")
    assert run.proc.returncode == -signal.SIGKILL

    run.env.pop("DESKBOT_FAILPOINT", None)
    run.start()
    barrier = await alice.say(room, "!deskphone who 486")
    await alice.reply_to(barrier)
    answered = f"SELECT 1 FROM answered WHERE key = '{command}'"
    wait_for(lambda: has(answered), what="the command's answer to be recorded")
    await alice.sync()

    to_fast, to_slow, lines = EXPECTED[point]
    [reply] = alice.replies_to(command)  # exactly once
    for line in lines:
        assert line in text_of(reply)
    if to_slow == 0 or point == "mid-send":
        assert "deskbot or its SIP agent restarted while sending" in text_of(reply)
    wait_for(lambda: calls(fast) >= to_fast and calls(slow) >= to_slow, what="the phones")
    assert (calls(fast), calls(slow)) == (to_fast, to_slow)
    assert len(alice.replies_to(barrier)) == 1
    assert run.stop() == 0


@pytest.mark.parametrize("point", list(EXPECTED))
async def test_a_crash_at_any_point_answers_once_and_sends_each_phone_at_most_once(
    point: str,
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
    tmp_path: Path,
):
    fast, slow = sipp(200), sipp(200, delay_ms=SLOW_MS)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    run: Deskbot = deskbot(
        bot, alice, {"486": fast.uri("486"), "487": slow.uri("487")}, timeout=5.0
    )
    await crash_and_restart(
        point, run, alice, room, (fast, slow), sqlite_has(tmp_path / "audit.sqlite3")
    )


async def test_a_command_older_than_max_age_is_answered_once_and_reaches_no_phone(
    synapse: Synapse, sipp, people, bot: Account, deskbot
):
    phone = sipp(200)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    run = deskbot(bot, alice, {"486": phone.uri("486")}, extra="[message]\nmax_age = 2\n")
    run.start()
    hello = await alice.say(room, "!deskphone 486 hello")
    await alice.reply_to(hello)
    run.stop()
    stale = await alice.say(room, "!deskphone 486 fire drill now")
    said = time.time()
    wait_for(lambda: time.time() - said > 3, timeout=5, what="the command to grow old")
    run.start()
    reply = text_of(await alice.reply_to(stale))
    assert reply.startswith("⚠️ not sent: this command waited ")
    assert reply.endswith(" s while deskbot was down; send it again if it still matters")
    barrier = await alice.say(room, "!deskphone 486 fresh")
    await alice.reply_to(barrier)
    await alice.sync()
    assert len(alice.replies_to(stale)) == 1
    assert [m.body.decode().split(": ", 1)[1] for m in phone.received()] == ["hello", "fresh"]


@pytest.mark.parametrize("point", ["after-record", "mid-send", "after-send", "after-reply"])
async def test_a_crash_on_postgresql_answers_once_and_sends_each_phone_at_most_once(
    point: str,
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
    postgres: Postgres,
):
    """The same crash points with the audit log in PostgreSQL: a restarted replica
    recognises its own commands (its id is the same after a restart) and answers them."""
    fast, slow = sipp(200), sipp(200, delay_ms=SLOW_MS)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    run: Deskbot = deskbot(
        bot, alice, {"486": fast.uri("486"), "487": slow.uri("487")}, timeout=5.0
    )
    url = postgres.database()
    db = url.rsplit("/", 1)[1]
    text = run.config.read_text()
    start = text.index("[audit]")
    end = text.index("[", start + 1)
    run.config.write_text(
        text[:start] + f'[audit]\nurl = "{url}"\npassword_env = "{PASSWORD_ENV}"\n' + text[end:]
    )

    def has(sql: str) -> bool:  # the tables are there: deskbot made them at its start
        return bool(postgres.query(db, sql))

    await crash_and_restart(point, run, alice, room, (fast, slow), has)
