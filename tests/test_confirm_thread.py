"""Confirmations back in the thread: `confirm` typed in the console, the OK pressed at [desk].

The console source, the relay (on the recording sender), the desk endpoint
and the poster run as in `deskbot run`; the phone's press is a real HTTP GET
of the URL its screen's key carries. A poster that was never told (as after
a SIGKILL between the press and the post) posts it at the next start, once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from datetime import datetime

from conftest import until
from test_confirm import DESK, _get, _settings

from deskbot.directory import loader
from deskbot.relay.relay import Relay
from deskbot.relay.values import ChatUser, Policy
from deskbot.senders.recording import RecordingSender
from deskbot.service.confirms import ConfirmPoster, confirmed_text
from deskbot.settings.schema import Desk
from deskbot.sources.console import ConsoleSource
from deskbot.sources.desk import DeskSource
from deskbot.store.audit import AuditLog


def _service(tmp_path, desk_url: str):
    s = _settings(tmp_path)
    policy = dataclasses.replace(Policy.from_settings(s), desk_url=desk_url)
    phones = RecordingSender()
    audit = AuditLog(tmp_path / "audit.sqlite3")
    relay = Relay(phones, loader.from_settings(s), policy, audit)
    out = io.StringIO()
    console = ConsoleSource(relay, ChatUser("console", "alice", "Alice"), out, prompt=False)
    assert relay.confirmer is not None

    def label(ext: str) -> str:
        return relay.directory.phones[ext].label

    poster = ConfirmPoster(relay.confirmer.store, {"console": console}, label)
    return relay, phones, out, console, poster


def test_the_confirmed_line_names_the_phone_and_the_time():
    at = datetime(2026, 3, 4, 14, 3, 30).timestamp()
    assert confirmed_text("601", "Reception", at, None) == "601 Reception confirmed at 14:03"
    utc = datetime.fromisoformat("2026-03-04T13:03:00+00:00").timestamp()
    assert confirmed_text("602", "", utc, "Europe/Berlin") == "602 confirmed at 14:03"


async def test_a_press_is_posted_to_the_console_thread_as_it_comes(tmp_path):
    relay, phones, out, console, poster = _service(tmp_path, DESK)
    relay.confirmer.on_confirm.append(poster.pressed)
    desk = DeskSource(Desk(listen="127.0.0.1:0", url=DESK), None, relay.confirmer)
    await desk.start()
    try:
        relay.policy = dataclasses.replace(relay.policy, desk_url=f"http://127.0.0.1:{desk.port}")
        await console.handle_line("confirm @floor Fire drill at 14:00")
        report = out.getvalue()
        assert "603 (Kitchen): 200 OK (1 ms); cannot confirm (format message)" in report
        assert "601 confirmed" not in report
        status, _, _ = await asyncio.to_thread(_get, phones.asks["601"].url)
        assert status == 200
        clock = time.strftime("%H:%M")
        line = f"601 Reception confirmed at {clock}"
        await until(lambda: line in out.getvalue(), what="the confirmation in the console")
        await asyncio.to_thread(_get, phones.asks["601"].url)  # pressed again: said once
        await poster.close()
        assert out.getvalue().count("confirmed at") == 1
        assert "602" not in out.getvalue().split(line)[1]
    finally:
        await desk.stop()


async def test_a_press_not_yet_posted_is_posted_at_the_next_start_once(tmp_path):
    relay, phones, out, console, _ = _service(tmp_path, DESK)
    await console.handle_line("confirm 601 Fire drill at 14:00")
    # the press is recorded, then deskbot dies before it is posted: no poster listens
    assert relay.confirmer.press(phones.asks["601"].url.removeprefix(DESK), "127.0.0.1")
    assert "confirmed at" not in out.getvalue()
    _, _, again, _, poster2 = _service(tmp_path, DESK)  # the next start, same file
    assert await poster2.catch_up() == 1
    assert again.getvalue().count("601 Reception confirmed at") == 1
    assert await poster2.catch_up() == 0
    assert again.getvalue().count("confirmed at") == 1


async def test_after_confirm_within_the_thread_names_who_did_not_confirm_once(tmp_path):
    relay, phones, out, console, poster = _service(tmp_path, DESK)
    await console.handle_line("confirm @floor Fire drill at 14:00")
    assert relay.confirmer.press(phones.asks["601"].url.removeprefix(DESK), "127.0.0.1")
    await poster.catch_up()
    within = relay.policy.message.confirm_within
    assert await poster.sweep(time.time() + within - 5) == 0  # not due yet
    assert "not confirmed" not in out.getvalue()
    # deskbot was down when it fell due: the next start's sweep tells the thread, once
    _, _, again, _, later = _service(tmp_path, DESK)
    assert await later.sweep(time.time() + within + 1) == 1
    assert again.getvalue().strip() == "1/3 confirmed; not confirmed: 602 Lobby"
    assert await later.sweep(time.time() + within + 2) == 0
    assert again.getvalue().count("not confirmed") == 1
