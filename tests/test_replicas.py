"""Two or more replicas on one PostgreSQL: one answer per command, take-over of a dead one's.

Each "replica" here is a relay with its own connection pool, replica id and
phones (recording senders), sharing one real PostgreSQL database, as two
`deskbot run` do; the end-to-end twins with Synapse and SIPp are in
test_replicas_run.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import Chat, until
from test_relay import ALICE, BOB, settings

from deskbot.directory import loader
from deskbot.relay import report
from deskbot.relay.relay import Relay
from deskbot.relay.values import ChatUser, Dispatch, Policy, Replay, Request
from deskbot.senders.recording import RecordingSender
from deskbot.service.replicas import Replicas
from deskbot.sources.schedule import ScheduleSource
from deskbot.sources.serve import carry_out, serve

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)
RESTARTED = "no answer — deskbot or its SIP agent restarted while sending"


class Room:
    """A chat source that answers later in a thread (``Replies``), keeping what it showed."""

    name = "slack"

    def __init__(self) -> None:
        self.chat = Chat()

    def replier_for(self, user: ChatUser, place: str, thread: str, key: str) -> Chat:
        return self.chat


class Replica:
    def __init__(self, store, name: str, lease: float = 10.0, **overrides) -> None:
        s = settings(**overrides)
        self.phones = RecordingSender()
        self.audit = store(name, lease)
        self.relay = Relay(
            self.phones, loader.from_settings(s), Policy.from_settings(s), self.audit
        )
        self.room = Room()
        assert self.relay.deferred is not None
        chats = {"slack": self.room}
        self.schedule = ScheduleSource(self.relay, self.relay.deferred, chats)
        self.replicas = Replicas(self.relay, self.audit, chats, self.schedule, lease)


def command(key: str, text: str = "486,487 fire drill", **extra) -> Request:
    return Request(ALICE, text, "#ops", key=key, thread="ts1", **extra)


async def test_a_command_both_replicas_get_at_once_is_sent_and_answered_once(store):
    a, b = Replica(store, "a"), Replica(store, "b")
    request = command("slack:Ev1")
    first, second = a.relay.prepare(request), b.relay.prepare(request)  # neither recorded yet
    assert isinstance(first, Dispatch) and isinstance(second, Dispatch)
    chat_a, chat_b = Chat(), Chat()
    done = await asyncio.gather(
        carry_out(a.relay, first, chat_a), carry_out(b.relay, second, chat_b)
    )
    assert isinstance(done[0], report.Report) and done[1] is None  # the key insert decided
    assert len(chat_a.shown) == 1 and chat_b.shown == []
    assert a.phones.texts("486") == ["alice: fire drill"] and b.phones.sent == []
    late = Chat()  # the other replica reads the event again, much later: still silent
    assert await serve(b.relay, request, late) is None and late.shown == []


async def test_a_replica_catching_up_while_the_other_sends_stays_silent(store):
    a, b = Replica(store, "a"), Replica(store, "b")
    a.phones.gate = asyncio.Event()  # the phones are slow
    request = command("slack:Ev2")
    chat_a, chat_b = Chat(), Chat()
    sending = asyncio.ensure_future(serve(a.relay, request, chat_a))
    await until(lambda: a.relay.held, what="a to record the command")
    assert await serve(b.relay, request, chat_b) is None
    a.phones.gate.set()
    await sending
    assert await serve(b.relay, request, chat_b) is None  # finished and answered by a
    assert len(chat_a.shown) == 1 and chat_b.shown == [] and b.phones.sent == []


class SlowChat(Chat):
    """A chat whose post of a reply takes a while (a slow Matrix or Slack server)."""

    def __init__(self) -> None:
        super().__init__()
        self.posting, self.gate = asyncio.Event(), asyncio.Event()

    async def report(self, result) -> None:
        self.posting.set()
        await self.gate.wait()
        await super().report(result)


async def test_a_command_finished_by_one_replica_while_the_other_catches_up_is_answered_once(
    store,
):
    """The owner's hold ran out while its phones were slow (its renewals stalled); its phones
    answer and it posts its reply; the other replica, catching up on the chat, reads the
    command in that window. One of the two answers it, not both."""
    a, b = Replica(store, "a", lease=1.0), Replica(store, "b", lease=1.0)
    a.phones.gate = asyncio.Event()
    request = command("slack:Ev9")
    chat_a, chat_b = SlowChat(), Chat()
    sending = asyncio.ensure_future(serve(a.relay, request, chat_a))
    await until(lambda: a.relay.held, what="a to record the command")
    await until(lambda: time.time() > a.audit.seen("slack:Ev9").lease_until, what="expiry")
    a.phones.gate.set()
    await chat_a.posting.wait()  # a's reply is on its way to the chat
    await serve(b.relay, request, chat_b)  # b reads the command now
    chat_a.gate.set()
    await sending
    await asyncio.gather(a.replicas.once(), b.replicas.once())  # nor is it taken over later
    answers = chat_a.shown + chat_b.shown + a.room.chat.shown + b.room.chat.shown
    assert len(answers) == 1, answers
    assert "✅ 486 (Desk 486): 200 OK" in answers[0]  # the owner's, with the phones' codes
    assert b.phones.sent == [] and a.phones.texts("486") == ["alice: fire drill"]
    assert b.relay.takeovers == 0


async def test_a_command_that_sends_nothing_is_answered_by_one_of_two_replicas(store):
    a, b = Replica(store, "a"), Replica(store, "b")
    for key, text in (("slack:who", "who 486"), ("slack:help", "help"), ("slack:bad", "zzz")):
        chat_a, chat_b = Chat(), Chat()
        request = Request(ALICE, text, "#ops", key=key)
        await asyncio.gather(serve(a.relay, request, chat_a), serve(b.relay, request, chat_b))
        assert len(chat_a.shown + chat_b.shown) == 1, (text, chat_a.shown, chat_b.shown)
        late = Chat()  # read again later: still answered once
        assert await serve(b.relay, request, late) is None and late.shown == []


async def test_an_api_retry_at_the_other_replica_is_answered_from_the_log(store):
    a, b = Replica(store, "a"), Replica(store, "b")
    request = command("api:retry", answer_repeats=True)
    await serve(a.relay, request, Chat())
    await until(lambda: b.audit.seen("api:retry").answered, what="a's answer to be written")
    chat = Chat()
    again = await serve(b.relay, request, chat)
    assert isinstance(again, report.Report)
    assert "✅ 486 (Desk 486): 200 OK" in chat.shown[0] and b.phones.sent == []


async def test_a_dead_replicas_command_is_answered_once_by_another_and_never_sent_again(store):
    a = Replica(store, "a", lease=1.0)
    a.phones.gate = asyncio.Event()  # a records the command, then stalls and dies
    request = command("slack:Ev3")
    stalled = asyncio.ensure_future(serve(a.relay, request, a.room.chat))
    await until(lambda: a.relay.held, what="a to record the command")
    b, c = Replica(store, "b", lease=1.0), Replica(store, "c", lease=1.0)
    assert await serve(b.relay, request, Chat()) is None  # a's hold is live: silent
    began = time.monotonic()
    await until(lambda: time.time() > a.audit.seen("slack:Ev3").lease_until, what="expiry")
    await asyncio.gather(b.replicas.once(), c.replicas.once())  # both look; one takes it
    answers = b.room.chat.shown + c.room.chat.shown
    assert len(answers) == 1, answers
    assert f"⚠️ 486 (Desk 486): {RESTARTED}" in answers[0]
    assert time.monotonic() - began < 30  # only a hang: once is enough, no second lease
    assert b.relay.takeovers + c.relay.takeovers == 1
    assert b.phones.sent == [] and c.phones.sent == []
    # the old owner wakes up: its phones answer, but its late writes and its reply are refused
    a.phones.gate.set()
    await stalled
    assert a.room.chat.shown == []
    assert b.audit.seen("slack:Ev3").answers == ()
    assert await serve(c.relay, request, Chat()) is None  # answered: nobody answers again
    await asyncio.gather(b.replicas.once(), c.replicas.once())
    assert len(b.room.chat.shown + c.room.chat.shown) == 1


async def test_a_live_replica_keeps_its_hold_past_the_lease_while_its_phones_are_slow(store):
    a, b = Replica(store, "a", lease=1.0), Replica(store, "b", lease=1.0)
    a.phones.gate = asyncio.Event()
    request = command("slack:Ev4")
    sending = asyncio.ensure_future(serve(a.relay, request, a.room.chat))
    await until(lambda: a.relay.held, what="a to record the command")
    renewing = asyncio.Event()
    renewals = asyncio.ensure_future(a.replicas.run(renewing))
    until_when = time.monotonic() + 2.5  # two and a half leases
    while time.monotonic() < until_when:
        await b.replicas.once()
        await asyncio.sleep(0.2)
    a.phones.gate.set()
    await sending
    renewing.set()
    await renewals
    assert b.room.chat.shown == [] and len(a.room.chat.shown) == 1


async def test_one_replica_leads_the_clocks_and_another_takes_over_when_it_goes(store):
    a, b = Replica(store, "a"), Replica(store, "b")
    await a.replicas.once()
    await b.replicas.once()
    assert (a.replicas.leading, b.replicas.leading) == (True, False)
    assert (a.schedule.leading, b.schedule.leading) == (True, False)
    a.audit.close()  # its connection goes, and the lock with it
    await b.replicas.once()
    assert b.replicas.leading


async def test_a_schedule_occurrence_fires_once_with_two_replicas_that_both_lead(store):
    """Two leaders (a split second after a take-over): the occurrence's key still sends once."""
    overrides = {
        "schedules": {"drill": {"cron": "* * * * *", "targets": "486", "text": "drill"}},
    }
    a, b = Replica(store, "a", **overrides), Replica(store, "b", **overrides)
    for r in (a, b):
        await r.schedule.start()
        r.schedule._since = time.time() - 61  # one occurrence in the window
        r.schedule._born_at["drill"] = time.time() - 120  # ...of a schedule older than it
        r.schedule.fire_due()
    await asyncio.gather(a.schedule.settle(), b.schedule.settle())
    assert len(a.phones.texts("486") + b.phones.texts("486")) == 1


async def test_a_later_send_fires_once_with_two_replicas(store, tmp_path: Path):
    a, b = Replica(store, "a"), Replica(store, "b")
    planned = await serve(a.relay, Request(ALICE, "in 1s 486 tea", "#ops", key="slack:Ev5"),
                          a.room.chat)  # fmt: skip
    assert planned is not None
    await until(lambda: a.relay.deferred.due(time.time()), what="the send to come due")
    a.schedule.fire_due()
    b.schedule.fire_due()
    await asyncio.gather(a.schedule.settle(), b.schedule.settle())
    assert len(a.phones.texts("486") + b.phones.texts("486")) == 1
    assert isinstance(a.relay.prepare(command("slack:Ev5")), Replay)


async def test_rate_limits_hold_across_replicas(store):
    limits = {"limits": {"per_sender_per_minute": 2, "per_phone_per_minute": 2}}
    a, b = Replica(store, "a", **limits), Replica(store, "b", **limits)
    chat = Chat()
    await serve(a.relay, command("slack:r1", "486 one"), chat)
    await serve(b.relay, command("slack:r2", "486 two"), chat)
    await serve(a.relay, command("slack:r3", "486 three"), chat)
    assert chat.shown[2].startswith("⚠️ slow down: you may send 2 commands a minute")
    bob = ChatUser("slack", "U0BOB0001", "bob")
    await serve(b.relay, Request(bob, "486,487 four", "#ops", key="slack:r4"), chat)
    assert "486 got 2 messages in the last minute" in chat.shown[3]
    assert a.phones.texts("486") + b.phones.texts("486") == ["alice: one", "alice: two"]
    assert b.phones.texts("487") == ["bob: four"]


async def test_the_look_before_costly_work_sees_the_other_replicas_slots(store):
    limits = {"limits": {"per_sender_per_minute": 2}}
    a, b = Replica(store, "a", **limits), Replica(store, "b", **limits)
    for key in ("slack:w1", "slack:w2"):
        await serve(a.relay, command(key, "486 one"), Chat())
    # the cheap refusal before an alert's costly formatting, at the other replica
    refused = b.relay.screen(Request(ALICE, "", "#ops", targets="486"))
    assert refused is not None and refused.problem == "rate-limited"
    assert 55 < refused.retry_after <= 60 and "try again in 60 s" in refused.text
    for _ in range(3):  # a look takes no slot: bob, and alice a minute on, still fit
        assert b.relay.screen(Request(ALICE, "", "#ops", targets="486")) is not None
    assert b.relay.screen(Request(BOB, "", "#ops", targets="487")) is None


async def test_the_replica_that_loses_a_key_gives_its_rate_slots_back(store):
    limits = {"limits": {"per_sender_per_minute": 2, "per_phone_per_minute": 2}}
    a, b = Replica(store, "a", **limits), Replica(store, "b", **limits)
    first = command("slack:g1", "486 one")
    jobs = a.relay.prepare(first), b.relay.prepare(first)  # both count it, one sends it
    await asyncio.gather(
        *(carry_out(r.relay, j, Chat()) for r, j in zip((a, b), jobs, strict=True))
    )
    chat = Chat()
    await serve(b.relay, command("slack:g2", "486 two"), chat)
    assert chat.shown[0].startswith("✅ 486 (Desk 486): 200 OK")
    assert a.phones.texts("486") + b.phones.texts("486") == ["alice: one", "alice: two"]
