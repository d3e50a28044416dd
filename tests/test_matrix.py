"""Matrix: people talk to `deskbot run` through a real Synapse, and SIPp phones answer."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time

from conftest import (
    desk_lines,
    free_port,
    http_get,
    ok_key,
    phone_got,
    phone_lines,
    run_deskbot,
    thanks_of,
    wait_for,
)
from matrix_people import (
    SYNC_FILTER,
    Person,
    alice_in_a_room_with_the_bot,
    join,
    text_of,
)
from matrix_server import Account, Synapse
from nio import RoomSendResponse, SyncResponse


# -- tests ----------------------------------------------------------------------------
async def test_a_command_gets_a_notice_in_its_thread_with_the_phones_answer(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    phone = sipp(200)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    deskbot = deskbot(bot, alice, {"486": phone.uri("486")}).start()

    command = await alice.say(room, "!deskphone 486 meeting moved to 3pm")
    reply = await alice.reply_to(command)
    assert reply["sender"] == bot.user_id
    content = reply["content"]
    assert content["msgtype"] == "m.notice"
    assert "486 (Reception)" in content["body"] and "200 OK" in content["body"]
    assert content["format"] == "org.matrix.custom.html"
    assert "200 OK" in content["formatted_body"]
    assert content["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": command,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": command},
    }
    await alice.wait("✅ on the command", lambda: "✅" in alice.reactions_to(command))
    [message] = phone.wait_received(1)
    assert message.body.decode().endswith(": meeting moved to 3pm")

    # a command inside the thread is answered in the same thread
    followup = await alice.say(room, "!deskphone who 486", thread=command)
    reply = await alice.reply_to(followup)
    assert reply["content"]["m.relates_to"]["event_id"] == command
    assert "486 (Reception)" in text_of(reply)
    assert phone.uri("486") not in text_of(reply)  # addresses are for admins

    # in a direct (two-member) room the prefix may be left out
    help_command = await alice.say(room, "help")
    assert "Send a text to desk phones" in text_of(await alice.reply_to(help_command))
    history = await alice.say(room, "!deskphone history")
    assert "1/1 delivered" in text_of(await alice.reply_to(history))
    # the bot answers no notice and none of its own events: one reply per command
    for event_id in (command, followup, help_command, history):
        assert len(alice.replies_to(event_id)) == 1
    # three commands answered since: a ⏳ on the first would have come and gone by now
    assert list(alice.reactions_to(command)) == ["✅"]  # a fast phone: no ⏳ at all,
    assert alice.redacted_reactions_to(command) == []  # not even one added and taken away
    assert "meeting moved" not in deskbot.log()


async def test_refusals_timeouts_and_group_summary_name_each_phone(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    ok, missing, silent = sipp(200), sipp(404), sipp(silent=True)
    alice = people("alice")
    carol = people("carol")  # not in [people]: the phone shows her display name
    await carol.client.set_displayname("Carol Q")
    room = await alice.create_room(invite=[bot.user_id, carol.user_id])
    join(synapse, bot, room)
    await carol.client.join(room)
    await carol.sync()
    phones = {"486": ok.uri("486"), "487": missing.uri("487"), "488": silent.uri("488")}
    deskbot(bot, alice, {**phones, "489": ok.uri("489")}).start()

    not_found = await alice.say(room, "!deskphone 487 hello")
    no_answer = await alice.say(room, "!deskphone 488 hello")
    group = await carol.say(room, "!deskphone floor lunch is here")

    text = text_of(await alice.reply_to(not_found))
    assert "487 (Lab)" in text and "404 Not Found" in text and "check the phone" in text
    text = text_of(await alice.reply_to(no_answer))
    assert "488 (Storage)" in text and "408" in text and "no answer" in text
    text = text_of(await alice.reply_to(group))
    assert text.splitlines()[-1] == "2/3 delivered"
    assert "487 (Lab): 404 Not Found" in text and "489 (Kitchen): 200 OK" in text
    await alice.wait("❌ on the group send", lambda: "❌" in alice.reactions_to(group))
    await alice.wait("❌ on the 404", lambda: "❌" in alice.reactions_to(not_found))
    # the silent phone kept deskbot waiting: ⏳ showed, and went once the 408 came
    await alice.wait("❌ on the 408", lambda: "❌" in alice.reactions_to(no_answer))
    assert alice.redacted_reactions_to(no_answer) == ["⏳"]
    assert list(alice.reactions_to(no_answer)) == ["❌"]
    bodies = [m.body.decode() for m in ok.wait_received(2)]
    assert bodies == ["Carol Q: lunch is here"] * 2


async def test_senders_outside_access_and_rooms_outside_matrix_rooms_are_refused(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    phone = sipp(200)
    alice, mallory = people("alice"), people("mallory")  # mallory is not in [access] senders
    allowed = await alice.create_room(invite=[bot.user_id, mallory.user_id])
    elsewhere = await alice.create_room(invite=[bot.user_id])
    for room in (allowed, elsewhere):
        join(synapse, bot, room)
    await mallory.client.join(allowed)
    await mallory.sync()
    deskbot = deskbot(bot, alice, {"486": phone.uri("486")}, rooms=[allowed], senders=["alice"])
    deskbot.start()

    refused = await mallory.say(allowed, "!deskphone 486 let me in")
    assert "not allowed" in text_of(await mallory.reply_to(refused))
    ignored = await alice.say(elsewhere, "!deskphone 486 wrong room")
    wait_for(lambda: f"ignored a message in {elsewhere}" in deskbot.log(), what="the room refusal")
    # invites: from a sender the relay refuses, and into a room not in matrix.rooms
    mallorys_room = await mallory.create_room(invite=[bot.user_id])
    alices_room = await alice.create_room(invite=[bot.user_id])
    await mallory.wait(
        "the bot to reject mallory's invite",
        lambda: mallory.membership(mallorys_room, bot.user_id) == "leave",
    )
    await alice.wait(
        "the bot to reject an invite into a room not in matrix.rooms",
        lambda: alice.membership(alices_room, bot.user_id) == "leave",
    )
    accepted = await alice.say(allowed, "!deskphone 486 hello")
    assert "200 OK" in text_of(await alice.reply_to(accepted))

    await alice.sync()
    assert alice.replies_to(ignored) == []
    assert [m.body.decode() for m in phone.received()] == ["alice: hello"]
    assert "rejected invite" in deskbot.log()


async def test_backlog_is_skipped_and_commands_sent_while_stopped_are_answered_once(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    phone = sipp(200)
    alice = people("alice")
    old_room = await alice.create_room(invite=[bot.user_id])
    join(synapse, bot, old_room)
    before = await alice.say(old_room, "!deskphone 486 from yesterday")
    later_room = await alice.create_room()  # the bot is invited to it only later
    before_invite = await alice.say(later_room, "!deskphone 486 before the invite")
    deskbot = deskbot(bot, alice, {"486": phone.uri("486")}).start()

    await alice.client.room_invite(later_room, bot.user_id)
    await alice.wait("the bot to join", lambda: alice.membership(later_room, bot.user_id) == "join")
    first = await alice.say(old_room, "!deskphone 486 first")
    joined = await alice.say(later_room, "!deskphone 486 after joining")
    await alice.reply_to(first)
    await alice.reply_to(joined)
    await alice.wait("✅ on the last command", lambda: "✅" in alice.reactions_to(joined))

    deskbot.stop()
    while_down = [await alice.say(old_room, f"!deskphone 486 while down {i}") for i in range(3)]
    deskbot.start()
    for command in while_down:
        await alice.reply_to(command)
    after = await alice.say(later_room, "!deskphone 486 after the restart")
    await alice.reply_to(after)

    await alice.sync()
    for command in (first, joined, *while_down, after):
        assert len(alice.replies_to(command)) == 1
    assert alice.replies_to(before) == alice.replies_to(before_invite) == []
    bodies = sorted(m.body.decode().split(": ", 1)[1] for m in phone.wait_received(6))
    assert bodies == sorted(
        ["first", "after joining", "after the restart"] + [f"while down {i}" for i in range(3)]
    )


async def test_a_homeserver_killed_while_a_reply_is_in_flight_loses_no_command(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    phone, slow = sipp(200), sipp(200, delay_ms=2000)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    phones = {"486": phone.uri("486"), "487": slow.uri("487")}
    deskbot = deskbot(bot, alice, phones, timeout=5.0).start()
    before = await alice.say(room, "!deskphone 486 before")
    await alice.reply_to(before)

    assert deskbot.health()["chat"]["matrix"]["connected"] is True

    in_flight = await alice.say(room, "!deskphone 487 answered in the outage")
    slow.wait_received(1)  # deskbot has the command; its reply waits for the phone
    synapse.stop(signal.SIGKILL)
    wait_for(lambda: "unreachable" in deskbot.log(), what="deskbot to notice the outage")
    assert deskbot.health()["chat"]["matrix"]["connected"] is False
    wait_for(  # the phone's 200 came while the homeserver was down
        lambda: "SIP/2.0 200 OK" in slow.trace.read_text(errors="replace"),
        what="the slow phone to answer",
    )
    synapse.start()
    after = [await alice.say(room, f"!deskphone 486 after {i}") for i in range(3)]
    for command in after:
        await alice.reply_to(command, timeout=20)
    reply = await alice.reply_to(in_flight, timeout=30)

    assert "487" in text_of(reply) and "200 OK" in text_of(reply)
    await alice.sync()
    for command in (before, in_flight, *after):
        assert len(alice.replies_to(command)) == 1
    assert [m.body.decode().split(": ", 1)[1] for m in phone_got(slow)] == [
        "answered in the outage"
    ]


async def test_an_encrypted_room_works(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    phone = sipp(200)
    alice = people("alice")
    room = await alice.create_room(invite=[bot.user_id], encrypted=True)
    deskbot(bot, alice, {"486": phone.uri("486")}).start()  # joins on alice's invite
    await alice.wait("the bot to join", lambda: alice.membership(room, bot.user_id) == "join")
    await alice.wait(
        "the bot's device keys",
        lambda: list(alice.client.device_store.active_user_devices(bot.user_id)),
    )

    command = await alice.say(room, "!deskphone 486 secret meeting")
    reply = await alice.reply_to(command)
    assert "486 (Reception): 200 OK" in text_of(reply)
    assert reply["content"]["m.relates_to"]["event_id"] == command
    raw = synapse.request(
        "GET",
        f"/_matrix/client/v3/rooms/{room}/event/{reply['event_id']}",
        token=alice.account.access_token,
    )
    assert raw["type"] == "m.room.encrypted"
    assert [m.body.decode() for m in phone.wait_received(1)] == ["alice: secret meeting"]


async def test_a_downtime_longer_than_one_sync_carries_loses_no_command(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    phone = sipp(200)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    limits = "[limits]\nper_sender_per_minute = 1000\nper_phone_per_minute = 1000\n"
    deskbot = deskbot(bot, alice, {"486": phone.uri("486")}, extra=limits).start()
    first = await alice.say(room, "!deskphone 486 before")
    await alice.reply_to(first)

    deskbot.stop()
    missed = 120  # more than the 100 timeline events one sync returns: the sync is `limited`
    for i in range(missed):
        await alice.say(room, f"!deskphone 486 gap {i}")
    deskbot.start()
    wait_for(lambda: len(phone.received()) >= 1 + missed, timeout=60, what="every missed command")
    after = await alice.say(room, "!deskphone 486 after")
    await alice.reply_to(after, timeout=30)

    bodies = [m.body.decode().split(": ", 1)[1] for m in phone.received()]
    assert sorted(bodies) == sorted(["before", "after"] + [f"gap {i}" for i in range(missed)])
    assert re.search(r"read \d+ missed event\(s\) back", deskbot.log())


async def test_a_wrong_access_token_stops_deskbot_with_a_clear_error_and_exit_2(
    synapse: Synapse,
    people,
    bot: Account,
    deskbot,
):
    unstarted = deskbot(bot, people("alice"), {})
    result = run_deskbot(
        "run", "-c", str(unstarted.config), env={"DESKBOT_MATRIX_TOKEN": "syt_wrong_token"}
    )
    assert result.returncode == 2
    assert "the homeserver refused the access token in $DESKBOT_MATRIX_TOKEN" in result.stderr
    assert "syt_wrong_token" not in result.stderr + result.stdout


async def test_a_mention_pill_names_the_person_even_when_the_display_name_has_spaces(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    phone = sipp(200)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    deskbot(bot, alice, {"486": phone.uri("486")}).start()
    # what Element sends when alice picks "Alice Wonder" from the mention list
    content = {
        "msgtype": "m.text",
        "body": "!deskphone Alice Wonder hi there",
        "format": "org.matrix.custom.html",
        "formatted_body": f'!deskphone <a href="https://matrix.to/#/{alice.user_id}">'
        "Alice Wonder</a> hi there",
    }
    resp = await alice.client.room_send(room, "m.room.message", content)
    assert isinstance(resp, RoomSendResponse), resp
    assert "486 (Reception): 200 OK" in text_of(await alice.reply_to(resp.event_id))
    [message] = phone.wait_received(1)
    assert message.body.decode().endswith(": hi there")


async def test_a_broken_config_edit_reaches_the_admin_in_a_direct_room(
    synapse: Synapse,
    people,
    bot: Account,
    deskbot,
):
    alice, carol = people("alice"), people("carol")
    shared = await alice.create_room(invite=[bot.user_id, carol.user_id])
    join(synapse, bot, shared)
    await carol.client.join(shared)
    running = deskbot(bot, alice, {}, admins=["alice"]).start()
    running.config.write_text(running.config.read_text() + '[people.bob]\nphone = "999"\n')

    async def invitation() -> str | None:
        resp = await alice.client.sync(timeout=500, sync_filter=SYNC_FILTER)
        assert isinstance(resp, SyncResponse), resp
        for room_id, info in resp.rooms.join.items():
            alice.events += [(room_id, e.source) for e in info.timeline.events]
        return next(iter(resp.rooms.invite), None)

    direct = None
    deadline = time.monotonic() + 15
    while direct is None and time.monotonic() < deadline:
        direct = await invitation()
    assert direct, "the bot opened no direct room with the admin"
    await alice.client.join(direct)
    notices = await alice.wait(
        "the notice in the direct room",
        lambda: [e for r, e in alice.events if r == direct and "rejected" in str(e)],
    )
    body = notices[0]["content"]["body"]
    assert body.startswith("deskbot: config change rejected")
    assert "people.bob.phone: phone '999' is not in [phones]" in body
    # carol, in the shared room, sees none of it: checked once a later command there is answered
    barrier = await alice.say(shared, "!deskphone help")
    await alice.reply_to(barrier)
    assert not [e for r, e in alice.events if r == shared and "rejected" in str(e)]


async def test_hostile_events_neither_freeze_deskbot_nor_lose_the_commands_beside_them(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    phone = sipp(200)
    alice, mallory = people("alice"), people("mallory")  # any member of the room may post
    room = await alice.create_room(invite=[bot.user_id, mallory.user_id])
    join(synapse, bot, room)
    await mallory.client.join(room)
    await mallory.sync()
    run = deskbot(bot, alice, {"486": phone.uri("486")}, senders=["alice"]).start()
    first = await alice.say(room, "!deskphone 486 first")
    await alice.reply_to(first)
    run.stop()

    async def post(person: Person, content: dict) -> str:
        resp = await person.client.room_send(room, "m.room.message", content)
        assert isinstance(resp, RoomSendResponse), resp
        return resp.event_id

    # while deskbot is down, so that all of it comes in one sync batch
    await post(
        mallory,
        {
            "msgtype": "m.text",
            "body": "!deskphone 486 x",
            "format": "org.matrix.custom.html",
            "formatted_body": '<a href="https://matrix.to/#/@' + "a" * 58_000,
        },
    )
    odd = await post(
        alice, {"msgtype": "m.text", "body": "!deskphone 486 odd", "m.relates_to": "oops"}
    )
    listed = await post(
        alice, {"msgtype": "m.text", "body": "!deskphone 486 list", "m.relates_to": [1]}
    )
    after = await alice.say(room, "!deskphone 486 after")
    run.start()
    for command in (odd, listed, after):
        assert "200 OK" in text_of(await alice.reply_to(command))
    assert sorted(m.body.decode() for m in phone.received()) == sorted(
        f"alice: {t}" for t in ("first", "odd", "list", "after")
    )


async def test_a_confirm_pressed_at_the_phone_is_told_in_the_thread_then_who_did_not(
    synapse: Synapse,
    sipp,
    people,
    bot: Account,
    deskbot,
):
    snom, yealink = sipp(200, screen="snom-xml"), sipp(200, screen="yealink-xml")
    desk = free_port(socket.SOCK_STREAM)
    extra = [*desk_lines(desk), "[message]", "confirm_within = 10"]
    extra += phone_lines("601", snom.uri("601"), "snom-xml", label="Reception")
    extra += phone_lines("602", yealink.uri("602"), "yealink-xml", label="Lobby")
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    run = deskbot(bot, alice, {}, extra="\n".join(extra) + "\n").start()

    command = await alice.say(room, "!deskphone confirm 601,602 Fire drill")
    report = text_of(await alice.reply_to(command))
    assert "601 (Reception): 200 OK" in report and "602 (Lobby): 200 OK" in report
    url = ok_key(snom.wait_received(1)[0].body, "snom-xml")
    assert ok_key(yealink.wait_received(1)[0].body, "yealink-xml") != url
    before = time.strftime("%H:%M")
    status, page = await asyncio.to_thread(http_get, url)  # the person at 601 presses OK
    assert status == 200 and "Thank you" in thanks_of(page, "snom-xml")
    clock = {before, time.strftime("%H:%M")}

    def said(words: str) -> list[dict]:
        return [e for e in alice.replies_to(command) if words in text_of(e)]

    [confirmed] = await alice.wait("the confirmation in the thread", lambda: said("confirmed at"))
    assert text_of(confirmed) in {f"601 Reception confirmed at {c}" for c in clock}
    assert confirmed["sender"] == bot.user_id and confirmed["content"]["msgtype"] == "m.notice"
    relation = confirmed["content"]["m.relates_to"]
    assert relation["rel_type"] == "m.thread" and relation["event_id"] == command
    await asyncio.to_thread(http_get, url)  # pressed again: nothing more in the thread
    [summary] = await alice.wait("the summary", lambda: said("1/2"), timeout=30)
    assert text_of(summary) == "1/2 confirmed; not confirmed: 602 Lobby"
    assert summary["content"]["m.relates_to"]["event_id"] == command
    barrier = await alice.say(room, "!deskphone who 601")
    await alice.reply_to(barrier)
    assert len(alice.replies_to(command)) == 3  # the report, the confirmation, the summary
    assert url.rpartition("/")[2] not in run.log() and "Fire drill" not in run.log()
