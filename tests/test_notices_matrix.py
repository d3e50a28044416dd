"""Templates, deferred sends and schedules end to end: real Synapse, `deskbot run`, SIPp phones."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from itertools import pairwise

from matrix_people import alice_in_a_room_with_the_bot, text_of
from matrix_server import Account, Synapse

TEMPLATES = """
[templates.firedrill]
text = "Fire drill at {time}: leave by the stairs"
targets = "486"
"""


async def test_a_template_from_matrix_reaches_its_phone_and_a_missing_variable_is_refused(
    synapse: Synapse, sipp, people, bot: Account, deskbot
):
    phone = sipp(200)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    deskbot(bot, alice, {"486": phone.uri("486")}, extra=TEMPLATES).start()

    refused = await alice.say(room, "!deskphone !firedrill")
    assert "!firedrill needs time: add time=..." in text_of(await alice.reply_to(refused))
    command = await alice.say(room, "!deskphone !firedrill time=3pm")
    assert "486 (Reception): 200 OK" in text_of(await alice.reply_to(command))
    [message] = phone.wait_received(1)
    assert message.body.decode() == "alice: Fire drill at 3pm: leave by the stairs"


async def test_a_deferred_send_survives_a_restart_and_is_answered_in_its_thread(
    synapse: Synapse, sipp, people, bot: Account, deskbot, tmp_path
):
    phone = sipp(200)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    run = deskbot(bot, alice, {"486": phone.uri("486")}).start()

    command = await alice.say(room, "!deskphone in 6s 486 coffee is ready")
    ack = text_of(await alice.reply_to(command))
    assert ack.startswith("will send at ") and "to 486 (Reception), id 1" in ack
    assert run.stop() == 0  # deskbot is down when the time comes
    assert phone.received() == []
    run.start()
    [message] = phone.wait_received(1, timeout=20)
    assert message.body.decode() == "alice: coffee is ready"
    await alice.wait("the later report", lambda: len(alice.replies_to(command)) == 2)
    later = alice.replies_to(command)[-1]
    assert "486 (Reception): 200 OK" in text_of(later)
    assert later["content"]["m.relates_to"]["event_id"] == command  # in the command's thread
    run.stop()
    run.start()  # and once sent, a restart sends it no more
    listed = await alice.say(room, "!deskphone scheduled")
    assert text_of(await alice.reply_to(listed)) == "nothing is scheduled by you"
    assert len(phone.received()) == 1
    assert "coffee" not in run.log()


async def test_a_schedule_fires_each_occurrence_once_and_reports_to_its_room(
    synapse: Synapse, sipp, people, bot: Account, deskbot, tmp_path
):
    phone = sipp(200)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    # the seconds field in front is the documented test hook: every 2 s instead of a minute
    schedule = f"""
    [schedules.standup]
    cron = "*/2 * * * * *"
    timezone = "Europe/Berlin"
    targets = "486"
    text = "Stand-up in 5 minutes"
    report_to = "matrix:{room}"
    """
    run = deskbot(bot, alice, {"486": phone.uri("486")}, extra=schedule).start()
    messages = phone.wait_received(2, timeout=15)
    assert {m.body.decode() for m in messages} == {"standup: Stand-up in 5 minutes"}

    def notices() -> list[dict]:
        return [
            e
            for r, e in alice.events
            if r == room
            and e["sender"] == bot.user_id
            and "486 (Reception): 200 OK" in e["content"].get("body", "")
        ]

    await alice.wait("two runs reported in the room", lambda: len(notices()) >= 2)
    run.stop()  # a clean stop finishes the send in flight
    with sqlite3.connect(tmp_path / "audit.sqlite3") as db:
        keys = [k for (k,) in db.execute("SELECT key FROM commands ORDER BY id")]
        sent = db.execute("SELECT command_id, code FROM deliveries ORDER BY command_id").fetchall()
    occurrences = [datetime.fromisoformat(k.removeprefix("schedule:standup:")) for k in keys]
    assert len(occurrences) >= 2 and all(k.startswith("schedule:standup:20") for k in keys)
    # one run per occurrence: each a cron time of its own (even seconds), none fired twice
    gaps = [(b - a).total_seconds() for a, b in pairwise(occurrences)]
    assert all(gap > 0 and gap % 2 == 0 for gap in gaps), occurrences
    # at most one delivery per occurrence (past ones caught up at start may be rate-limited)
    assert len({command for command, _ in sent}) == len(sent) >= 2
    assert {code for _, code in sent} == {200}
    assert len(phone.received()) == len(sent)  # and the phone got each delivered one once
