"""Templates, deferred sends and schedules in the relay and the schedule source.

On the recording sender and a real SQLite audit log, with the clock injected:
what the chat would show and what each phone got.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Chat

from deskbot import notices
from deskbot.directory import loader
from deskbot.relay import grammar
from deskbot.relay.grammar import Later, Send, UsageError, UseTemplate
from deskbot.relay.relay import Relay
from deskbot.relay.values import ChatUser, Policy, Request
from deskbot.senders.recording import RecordingSender
from deskbot.settings.load import ConfigError, parse
from deskbot.sources.schedule import ScheduleSource
from deskbot.sources.serve import serve
from deskbot.store.audit import AuditLog

ALICE = ChatUser("matrix", "@alice:example.com", "Alice")
BOB = ChatUser("matrix", "@bob:example.com", "Bob")
BERLIN = ZoneInfo("Europe/Berlin")
# Monday 2025-03-03 09:54:30 in Berlin
MONDAY = datetime(2025, 3, 3, 9, 54, 30, tzinfo=BERLIN).timestamp()


def raw(**overrides: object) -> dict:
    return {
        "message": {"timezone": "Europe/Berlin"},
        "phones": {
            e: {"uri": f"sip:{e}@10.0.0.{e[1:]}", "label": f"Desk {e}"} for e in ["486", "487"]
        },
        "people": {
            "alice": {"phone": "486", "matrix": ALICE.id},
            "bob": {"phone": "487", "matrix": BOB.id},
        },
        "groups": {"everyone": {"members": ["486", "487"]}},
        "access": {"senders": ["alice", "bob"], "admins": ["alice"]},
        "templates": {
            "firedrill": {
                "text": "Fire drill at {time}: leave by the stairs",
                "targets": "@everyone",
            },
            "visitor": {"text": "{who} is at reception"},
        },
        **overrides,
    }


class Chats:
    """The chat sources, as the schedule source sees them: one Chat per thread."""

    name = "matrix"

    def __init__(self) -> None:
        self.threads: dict[str, Chat] = {}

    def replier_for(self, user: ChatUser, place: str, thread: str, key: str) -> Chat:
        return self.threads.setdefault(f"{place} {thread}".strip(), Chat())


class World:
    """deskbot's parts on one audit file; `restart()` builds them again as a new process would."""

    def __init__(self, tmp_path: Path, **overrides: object):
        self.path = tmp_path / "audit.sqlite3"
        self.settings = parse(raw(**overrides), Path("t.toml"), {}).settings
        self.phones = RecordingSender()
        self.now = MONDAY
        self.chats = Chats()
        self.restart()

    def restart(self) -> None:
        s = self.settings
        self.audit = AuditLog(self.path)
        self.relay = Relay(
            self.phones, loader.from_settings(s), Policy.from_settings(s), self.audit
        )
        self.relay.clock_wall = lambda: self.now
        assert self.relay.deferred is not None
        self.clock = ScheduleSource(
            self.relay, self.relay.deferred, {"matrix": self.chats}, clock=lambda: self.now
        )

    async def say(self, user: ChatUser, text: str, key: str = "", thread: str = "$cmd") -> str:
        chat = Chat()
        request = Request(user, text, "!room", key=key, sent_at=self.now, thread=thread)
        await serve(self.relay, request, chat)
        return "\n".join(chat.shown)

    async def tick(self, at: float) -> None:
        self.now = at
        self.clock.fire_due()
        await self.clock.settle()


@pytest.fixture
async def world(tmp_path: Path) -> World:
    made = World(tmp_path)
    await made.clock.start()
    return made


# -- grammar -------------------------------------------------------------------------
def test_the_grammar_reads_templates_and_sends_later_and_leaves_other_texts_alone():
    assert grammar.parse("!firedrill time=3pm") == UseTemplate(
        None, "firedrill", (("time", "3pm"),)
    )
    assert grammar.parse('487 !visitor who="Mr Smith"') == UseTemplate(
        "487", "visitor", (("who", "Mr Smith"),)
    )
    assert grammar.parse("in 15m @sales lunch") == Later("@sales lunch", delay=900)
    assert grammar.parse("at 9:05 !firedrill time=now") == Later(
        "!firedrill time=now", clock=(9, 5)
    )
    assert grammar.parse("486 !!important") == Send("486", "!important")
    assert grammar.parse("in the kitchen") == Send("in", "the kitchen")  # `in` may be a group
    with pytest.raises(UsageError, match="not key=value"):
        grammar.parse("!firedrill 3pm")
    with pytest.raises(UsageError, match="needs a send after it"):
        grammar.parse("in 20s who 486")
    with pytest.raises(UsageError, match="from 1s to 30 days"):
        grammar.parse("in 0s 486 now")


def test_at_means_today_or_tomorrow_when_past_in_the_zone_given():
    assert notices.next_at(9, 55, MONDAY, BERLIN).isoformat() == "2025-03-03T09:55:00+01:00"
    assert notices.next_at(9, 50, MONDAY, BERLIN).isoformat() == "2025-03-04T09:50:00+01:00"


def test_cron_occurrences_follow_daylight_saving_time():
    # 02:30 does not exist on 2025-03-30 in Berlin and happens twice on 2025-10-26
    spring = datetime(2025, 3, 29, 12, tzinfo=BERLIN).timestamp()
    found = [
        w.isoformat() for w in notices.occurrences("30 2 * * *", BERLIN, spring, spring + 2 * 86400)
    ]
    assert found == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]
    autumn = datetime(2025, 10, 25, 12, tzinfo=BERLIN).timestamp()
    found = [
        w.isoformat() for w in notices.occurrences("30 2 * * *", BERLIN, autumn, autumn + 86400)
    ]
    assert found == ["2025-10-26T02:30:00+02:00"]


# -- templates -------------------------------------------------------------------------
async def test_a_template_goes_to_its_own_targets_or_to_others_and_its_name_is_in_the_audit_log(
    world: World,
):
    shown = await world.say(ALICE, "!firedrill time=3pm")
    assert "2/2 delivered" in shown
    assert world.phones.texts("487") == ["alice: Fire drill at 3pm: leave by the stairs"]
    shown = await world.say(BOB, '486 !visitor who="Mr Smith"')
    assert "486 (Desk 486): 200 OK" in shown
    assert world.phones.texts("486")[-1] == "bob: Mr Smith is at reception"
    origins = world.audit.db.execute("SELECT origin FROM commands ORDER BY id").fetchall()
    assert origins == [("template:firedrill",), ("template:visitor",)]


async def test_a_missing_variable_an_unknown_template_or_no_targets_is_refused_and_nothing_sent(
    world: World,
):
    assert "!firedrill needs time: add time=..." in await world.say(ALICE, "!firedrill")
    assert "takes time, not place" in await world.say(ALICE, "!firedrill time=3 place=x")
    assert "no template !fire (templates: !firedrill, !visitor)" in await world.say(ALICE, "!fire")
    assert "write `TARGETS !visitor ...`" in await world.say(ALICE, "!visitor who=Bob")
    assert world.phones.sent == []


async def test_templates_lists_each_with_its_variables_and_targets(world: World):
    shown = await world.say(BOB, "templates")
    assert "• !firedrill time=... → @everyone: Fire drill at {time}: leave by the stairs" in shown
    assert "• !visitor who=... (give TARGETS first)" in shown


# -- deferred sends ----------------------------------------------------------------------
async def test_a_deferred_send_is_acknowledged_then_sent_once_in_its_thread_across_a_restart(
    world: World,
):
    ack = await world.say(ALICE, "in 20s 487 coffee is ready", key="$cmd1", thread="$cmd1")
    assert ack == "will send at 09:54:50 CET to 487 (Desk 487), id 1 (`cancel 1`)"
    await world.tick(MONDAY + 19)
    assert world.phones.sent == []
    world.restart()  # deskbot restarts before its time
    await world.clock.start()
    await world.tick(MONDAY + 21)
    assert world.phones.texts("487") == ["alice: coffee is ready"]
    assert "487 (Desk 487): 200 OK" in world.chats.threads["!room $cmd1"].shown[0]
    world.restart()  # and again after it: not sent twice, not answered twice
    await world.clock.start()
    await world.tick(MONDAY + 22)
    assert len(world.phones.sent) == 1
    assert len(world.chats.threads["!room $cmd1"].shown) == 1
    # the command read again (a sync read twice) plans nothing new
    again = await world.say(ALICE, "in 20s 487 coffee is ready", key="$cmd1")
    assert again == ""
    assert "coffee" not in "\n".join(world.audit.db.iterdump())  # erased once sent


async def test_at_plans_for_the_next_such_time_and_a_bad_send_is_refused_at_once(world: World):
    assert "will send at 09:55 CET" in await world.say(BOB, "at 9:55 486 stand-up")
    assert "will send tomorrow at 09:50 CET" in await world.say(BOB, "at 9:50 486 tomorrow's")
    refused = await world.say(BOB, "at 9:55 999 hello")
    assert "999" in refused and "Nothing was sent" in refused
    assert "!firedrill needs time" in await world.say(BOB, "in 5m !firedrill")


async def test_a_deferred_send_missed_by_more_than_max_age_is_reported_not_sent(world: World):
    await world.say(ALICE, "in 1m 487 stale soon", thread="$late")
    world.restart()  # deskbot was down from before its time until 10 minutes after it
    await world.clock.start()
    await world.tick(MONDAY + 60 + 600)
    assert world.phones.sent == []
    [shown] = world.chats.threads["!room $late"].shown
    assert shown.startswith("⚠️ not sent: this command waited 10 min while deskbot was down")


async def test_scheduled_lists_your_pending_sends_admins_see_all_and_cancel_stops_one(world: World):
    await world.say(ALICE, "in 1m 486 from alice")
    await world.say(BOB, "in 2m 487 from bob")
    mine = await world.say(BOB, "scheduled")
    assert mine == "1 scheduled send(s):\n• id 2 at 09:56:30 CET: 487 from bob"
    everyone = await world.say(ALICE, "scheduled")
    assert "id 1 at 09:55:30 CET by alice: 486 from alice" in everyone
    assert "id 2 at 09:56:30 CET by bob" in everyone
    assert "no pending send with id 1 of yours" in await world.say(BOB, "cancel 1")
    assert await world.say(BOB, "cancel 2") == "cancelled send 2: 487 from bob"
    await world.tick(MONDAY + 150)
    assert [p.extension for p, _ in world.phones.sent] == ["486"]
    assert await world.say(BOB, "scheduled") == "nothing is scheduled by you"


# -- schedules ----------------------------------------------------------------------------
async def test_a_schedule_fires_each_occurrence_once_even_when_deskbot_restarts_in_that_minute(
    tmp_path: Path,
):
    world = World(
        tmp_path,
        schedules={
            "standup": {"cron": "55 9 * * mon-fri", "targets": "486", "text": "Stand-up in 5"},
            "drill": {"cron": "55 9 * * *", "template": "firedrill", "vars": {"time": "10:00"}},
        },
    )
    await world.clock.start()
    await world.tick(MONDAY + 29)  # 09:54:59
    assert world.phones.sent == []
    await world.tick(MONDAY + 31)  # 09:55:01
    assert world.phones.texts("486") == [
        "standup: Stand-up in 5",
        "drill: Fire drill at 10:00: leave by the stairs",
    ]
    world.restart()
    await world.clock.start()  # the same minute: looked back on, not sent again
    await world.tick(MONDAY + 45)
    assert len(world.phones.texts("486")) == 2
    keys = world.audit.db.execute("SELECT key, origin FROM commands ORDER BY id").fetchall()
    assert keys == [
        ("schedule:standup:2025-03-03T09:55:00+01:00", "schedule:standup"),
        ("schedule:drill:2025-03-03T09:55:00+01:00", "schedule:drill template:firedrill"),
    ]


async def test_schedule_occurrences_missed_while_down_beyond_max_age_are_not_sent_late(
    tmp_path: Path,
):
    world = World(
        tmp_path, schedules={"standup": {"cron": "55 9 * * *", "targets": "486", "text": "up"}}
    )
    world.now = MONDAY + 31 + 301  # started 5 min 1 s after 09:55
    await world.clock.start()
    await world.tick(world.now + 1)
    assert world.phones.sent == []


async def test_occurrences_missed_while_down_are_reported_not_sent_where_the_schedule_reports(
    tmp_path: Path,
):
    standup = {"cron": "55 9 * * *", "targets": "486", "text": "up", "report_to": "matrix:!ops"}
    world = World(tmp_path, schedules={"standup": standup})
    await world.clock.start()
    await world.tick(MONDAY + 31)  # Monday 09:55:01: sent
    await world.clock.stop()
    world.restart()
    world.now = MONDAY + 2 * 86400 + 35 * 60  # Wednesday 10:30: Tuesday's and today's missed
    await world.clock.start()
    await world.tick(world.now + 1)
    assert world.phones.texts("486") == ["standup: up"]  # nothing sent late
    shown = world.chats.threads["!ops"].shown
    assert len(shown) == 2 and "✅ 486" in shown[0]  # only the latest missed one is handled
    assert shown[1].startswith("⚠️ not sent: this command waited 34 min")  # 09:55 today
    world.restart()
    await world.clock.start()  # once more: each was answered once, not again
    await world.tick(world.now + 2)
    assert len(world.chats.threads["!ops"].shown) == 2


def test_check_config_names_a_bad_cron_zone_template_or_target_by_its_key():
    with pytest.raises(ConfigError) as caught:
        parse(
            raw(
                schedules={
                    "a": {"cron": "61 * * * *", "targets": "486", "text": "x"},
                    "b": {
                        "cron": "* * * * *",
                        "timezone": "Mars/Base",
                        "targets": "999",
                        "text": "x",
                    },
                    "c": {"cron": "* * * * *", "template": "visitor"},
                },
                templates={**raw()["templates"], "bad": {"text": "at {time!r}", "targets": "@x"}},
            ),
            Path("t.toml"),
            {},
        )
    assert caught.value.problems == [
        "t.toml: templates.bad.text: {time} takes no format spec or conversion: write {time}",
        "t.toml: templates.bad.targets: '@x' is not a phone, person or group",
        "t.toml: schedules.a.cron: '61 * * * *' is not a valid cron expression: Bad minute",
        "t.toml: schedules.b.timezone: 'Mars/Base' is not an IANA time zone"
        " (like Europe/Berlin or UTC)",
        "t.toml: schedules.b.targets: '999' is not a phone, person or group",
        "t.toml: schedules.c.vars: template !visitor needs who: add who=...",
        "t.toml: schedules.c.targets: required key is missing (the template has none)",
    ]
