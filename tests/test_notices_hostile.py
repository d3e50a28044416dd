"""Later sends and schedules under careless or hostile use: floods of plans, downtime,
unknown time zones, times written the wrong way. The relay and the schedule source on the
recording sender and a real SQLite audit log, the clock injected (as in test_notices.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import Chat
from test_notices import ALICE, BOB, MONDAY, World

from deskbot.relay.values import Request
from deskbot.relay.window import SlidingWindow
from deskbot.sources.serve import serve


async def test_one_sender_may_plan_only_so_many_later_sends_and_due_ones_go_out_in_batches(
    tmp_path: Path,
):
    world = World(tmp_path, limits={"per_sender_per_minute": 1000, "per_phone_per_minute": 1000})
    await world.clock.start()
    answers = [await world.say(BOB, f"in 1m 486 note {i}") for i in range(25)]
    assert all(a.startswith("will send at ") for a in answers[:20])
    assert answers[20] == (
        "⚠️ not planned: you have 20 sends planned, the most is 20. "
        "`scheduled` lists them, `cancel ID` frees one."
    )
    for i in range(60):  # an admin may plan more
        assert (await world.say(ALICE, f"in 1m 487 a{i}")).startswith("will send at ")
    world.now = MONDAY + 61
    world.clock.fire_due()  # 80 are due: the first look starts at most 50
    assert len(world.clock._tasks) == 50
    await world.clock.settle()
    await world.tick(MONDAY + 62)
    assert len(world.phones.texts("486")) == 20 and len(world.phones.texts("487")) == 60


async def test_later_sends_of_one_thread_refused_at_their_time_get_one_answer_naming_them(
    tmp_path: Path,
):
    world = World(tmp_path, limits={"per_sender_per_minute": 5, "per_phone_per_minute": 1000})
    world.relay.sender_limit = SlidingWindow(5, clock=lambda: world.now)  # the world's minute
    await world.clock.start()
    for i in range(12):  # a script planning into one thread, within the rate limit
        world.now = MONDAY + 61 * (i // 4)  # four a minute
        assert (await world.say(BOB, f"at 10:00 486 note {i}")).startswith("will send at "), i
    await world.say(BOB, "at 10:00 487 elsewhere", thread="$other")
    await world.tick(MONDAY + 331)  # 10:00:01: thirteen due at once, five may go
    await world.tick(MONDAY + 332)
    shown = world.chats.threads["!room $cmd"].shown
    assert len(world.phones.texts("486")) == 5
    refusals = [s for s in shown if s.startswith("⚠️")]
    assert len(shown) == 6 and len(refusals) == 1, shown  # 5 reports, one answer for 7
    (refusal,) = refusals
    ids = refusal.split("(ids ")[1].split(")")[0].split(", ")
    assert refusal.startswith("⚠️ 7 planned sends were not sent (ids ") and len(ids) == 7
    assert refusal.count("\n• ") == 1  # the one reason, once
    assert world.chats.threads["!room $other"].shown[0].startswith("⚠️")  # its own thread
    assert world.relay.deferred is not None and world.relay.deferred.pending(None, None, None) == []


async def test_after_downtime_a_schedule_sends_only_its_latest_missed_occurrence(tmp_path: Path):
    every_minute = {"cron": "* * * * *", "targets": "486", "text": "tick"}
    world = World(tmp_path, schedules={"tick": every_minute}, message={"max_age": 600})
    await world.clock.start()
    await world.tick(MONDAY + 31)  # 09:55:01: the 09:55 occurrence
    assert world.phones.texts("486") == ["tick: tick"]
    await world.clock.stop()
    world.restart()
    world.now = MONDAY + 31 + 7 * 60  # down for seven minutes: seven occurrences missed
    await world.clock.start()
    await world.tick(world.now + 1)
    assert world.phones.texts("486") == ["tick: tick", "tick: tick"]  # one, not seven


async def test_a_new_schedule_never_sends_an_occurrence_from_before_it_existed(tmp_path: Path):
    world = World(
        tmp_path,
        schedules={"standup": {"cron": "54 9 * * *", "targets": "486", "text": "up"}},
        message={"max_age": 600},
    )
    await world.clock.start()  # 09:54:30: the 09:54 occurrence was before it existed
    await world.tick(MONDAY + 5)
    assert world.phones.sent == []


async def test_an_unknown_platform_time_zone_falls_back_to_the_configured_one_and_says_so(
    tmp_path: Path,
):
    world = World(tmp_path)
    await world.clock.start()
    chat = Chat()
    for zone in ("Mars/Olympus_Mons", "../../etc/passwd", "Europe/\x1b[2J"):
        request = Request(BOB, "at 14:55 486 meeting", "!room", sent_at=world.now, timezone=zone)
        await serve(world.relay, request, chat)
    assert len(chat.shown) == 3
    for answer in chat.shown:
        assert answer.startswith("will send at 14:55 CET to 486 (Desk 486)"), answer
        assert "is unknown here: read in Europe/Berlin)" in answer and "\x1b" not in answer


async def test_answers_about_a_time_name_the_day_when_it_is_not_today(tmp_path: Path):
    world = World(tmp_path)
    await world.clock.start()
    assert "will send in" not in (shown := await world.say(BOB, "in 99h 486 later"))
    assert shown.startswith("will send on Fri 2025-03-07 at 12:54 CET to 486")
    assert (await world.say(BOB, "at 03:00 486 night")).startswith(
        "will send tomorrow at 03:00 CET to 486"
    )
    listed = await world.say(BOB, "scheduled")
    assert "on Fri 2025-03-07 at 12:54:30 CET" in listed and "tomorrow at 03:00:00 CET" in listed


async def test_a_time_written_another_way_is_explained_not_taken_as_a_target(tmp_path: Path):
    world = World(tmp_path)
    await world.clock.start()
    assert "`at 3pm`: write the time as HH:MM, 24-hour, like `at 15:00`" in await world.say(
        BOB, "at 3pm 486 coffee"
    )
    assert "`in 20min`: write the delay like `in 20s`, `in 15m` or `in 2h`" in await world.say(
        BOB, "in 20min 486 coffee"
    )
    assert world.phones.sent == []
