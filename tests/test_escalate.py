"""Escalation: once confirm_within has passed, `escalate_to` is sent who did not confirm, once.

The console source, the relay (on the recording sender) and the poster run
as in `deskbot run`, on both store backends. The escalation goes through the
relay with the key ``escalate:ID``: a crash between its send and the mark
that it is done sends it once; nothing is sent when every phone confirmed;
one that fell due while deskbot was down longer than max_age is not sent,
and the thread says so.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from deskbot.directory import loader
from deskbot.relay.relay import Relay
from deskbot.relay.values import API, Answer, ChatUser, Dispatch, Policy, Request
from deskbot.senders.recording import RecordingSender
from deskbot.service.confirms import ConfirmPoster, escalation_text
from deskbot.settings.load import ConfigError, parse
from deskbot.sources.api import BadRequest, _confirm_fields
from deskbot.sources.console import ConsoleSource
from deskbot.sources.schedule import ScheduleSource

BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
DESK = "http://127.0.0.1:9122"


def _settings(tmp_path: Path):
    raw: dict = {
        "phones": {
            "601": {"uri": "sip:601@127.0.0.1:5070", "label": "Reception", "format": "snom-xml"},
            "602": {"uri": "sip:602@127.0.0.2:5070", "label": "Lobby", "format": "yealink-xml"},
            "603": {"uri": "sip:603@127.0.0.1:5071", "label": "Kitchen"},
            "700": {"uri": "sip:700@127.0.0.1:5072", "label": "Warden"},
        },
        "groups": {"floor": {"members": ["601", "602", "603"]}, "wardens": {"members": ["700"]}},
        "templates": {
            "evac": {
                "text": "Fire drill at {time}",
                "targets": "@floor",
                "confirm": True,
                "escalate_to": "@wardens",
            }
        },
        "schedules": {
            "roll": {
                "cron": "* * * * *",
                "targets": "@floor",
                "text": "Roll call",
                "confirm": True,
                "escalate_to": "@wardens",
                "report_to": "console",
            }
        },
        "desk": {"listen": "127.0.0.1:0", "url": DESK},
        "api": {"clients": {"monitoring": {"token_env": "T", "targets": ["@floor"]}}},
    }
    return parse(raw, tmp_path / "t.toml", {"T": "x" * 32}).settings


def _service(tmp_path: Path, audit):
    s = _settings(tmp_path)
    phones = RecordingSender()
    relay = Relay(phones, loader.from_settings(s), Policy.from_settings(s), audit)
    out = io.StringIO()
    console = ConsoleSource(relay, ChatUser("console", "alice", "Alice"), out, prompt=False)
    assert relay.confirmer is not None

    def label(ext: str) -> str:
        return relay.directory.phones[ext].label

    poster = ConfirmPoster(relay.confirmer.store, {"console": console}, label, None, relay)
    return relay, phones, out, console, poster


def _press(relay: Relay, phones: RecordingSender, extension: str) -> None:
    assert relay.confirmer is not None
    host = "127.0.0.2" if extension == "602" else "127.0.0.1"
    assert relay.confirmer.press(phones.asks[extension].url.removeprefix(DESK), host)


@BOTH
async def test_who_did_not_confirm_is_escalated_once_even_across_a_crash(tmp_path, store):
    relay, phones, out, console, poster = _service(tmp_path, store())
    await console.handle_line("!evac time=14:00")
    _press(relay, phones, "601")
    within = relay.policy.message.confirm_within
    assert await poster.sweep(time.time() + within - 5) == 0  # not due yet
    assert phones.texts("700") == []
    # the escalation is sent, then deskbot dies before it marks the command done
    poster.store.summarized = lambda command_id: None  # type: ignore[method-assign]
    assert await poster.sweep(time.time() + within + 1) == 1
    assert phones.texts("700") == ["alice: Not confirmed at 602 Lobby: Fire drill at 14:00"]
    assert "1/3 confirmed; not confirmed: 602 Lobby\ntold @wardens: ✅ 700 (Warden): 200 OK" in (
        out.getvalue()
    )
    # the next start: the thread is told, the wardens are not sent it again
    _, again, said, _, later = _service(tmp_path, store("r2"))
    assert await later.sweep(time.time() + within + 2) == 1
    assert again.texts("700") == []
    assert said.getvalue().strip() == "1/3 confirmed; not confirmed: 602 Lobby\ntold @wardens"
    assert await later.sweep(time.time() + within + 3) == 0
    assert again.texts("700") == [] and said.getvalue().count("told") == 1


@BOTH
async def test_nothing_is_escalated_when_every_phone_confirmed(tmp_path, store):
    relay, phones, out, console, poster = _service(tmp_path, store())
    await console.handle_line("!evac time=14:00")
    _press(relay, phones, "601")
    _press(relay, phones, "602")
    within = relay.policy.message.confirm_within
    assert await poster.sweep(time.time() + within + 1) == 1
    assert phones.texts("700") == []
    assert out.getvalue().strip().endswith("2/3 confirmed")


@pytest.mark.parametrize("late", [60, 360])  # max_age is 300 s
async def test_an_escalation_due_while_deskbot_was_down_is_sent_back_within_max_age_only(
    tmp_path, store, late
):
    relay, _, _, console, _ = _service(tmp_path, store())
    await console.handle_line("!evac time=14:00")
    within, most = relay.policy.message.confirm_within, relay.policy.message.max_age
    # deskbot stops before the command is due and is back `late` seconds after
    back, again, said, _, later = _service(tmp_path, store("r2"))
    back.clock_wall = lambda: time.time() + within + late
    assert await later.sweep(time.time() + within + late) == 1
    told = said.getvalue()
    assert "0/3 confirmed; not confirmed: 601 Reception, 602 Lobby" in told
    if late <= most:
        assert again.texts("700") == [
            "alice: Not confirmed at 601 Reception, 602 Lobby: Fire drill at 14:00"
        ]
        assert "told @wardens: ✅ 700 (Warden): 200 OK" in told
    else:
        assert again.texts("700") == []
        assert "@wardens not told: not sent: this command waited" in told


async def test_escalate_to_is_a_target_the_sender_may_reach_and_needs_confirm(tmp_path, store):
    relay, *_ = _service(tmp_path, store())
    client = ChatUser(API, "monitoring")

    def send(**fields) -> Answer | Dispatch:
        got = relay.prepare(Request(client, "x", "api", targets="601", confirm=True, **fields))
        assert not isinstance(got, Request)
        return got  # type: ignore[return-value]

    unknown = send(escalate_to="999")
    assert isinstance(unknown, Answer) and unknown.problem == "unknown-target"
    assert unknown.text.startswith("escalate_to: ")
    outside = send(escalate_to="700")  # the client reaches @floor only
    assert isinstance(outside, Answer) and outside.problem == "forbidden"
    assert isinstance(send(escalate_to="602"), Dispatch)
    assert _confirm_fields({"confirm": True, "escalate_to": "700"}) == (True, "700")
    for wrong in ({"escalate_to": "700"}, {"confirm": True, "escalate_to": 7}):
        with pytest.raises(BadRequest):
            _confirm_fields(wrong)


@BOTH
async def test_a_schedule_asks_for_confirmations_posts_them_where_it_reports_and_escalates(
    tmp_path, store
):
    relay, phones, out, console, poster = _service(tmp_path, store())
    now = [time.time()]
    assert relay.deferred is not None
    clock = ScheduleSource(relay, relay.deferred, {"console": console}, clock=lambda: now[0])
    await clock.start()
    now[0] += 61  # the next minute's occurrence
    clock.fire_due()
    await clock.settle()
    assert set(phones.asks) == {"601", "602"} and phones.texts("603")[-1].endswith("Roll call")
    assert "601 (Reception): 200 OK (1 ms); confirm asked" in out.getvalue()
    _press(relay, phones, "602")
    assert await poster.catch_up() == 1
    assert "602 Lobby confirmed at" in out.getvalue()
    within = relay.policy.message.confirm_within
    assert await poster.sweep(time.time() + within + 1) == 1
    assert phones.texts("700") == ["roll: Not confirmed at 601 Reception: Roll call"]
    assert "1/3 confirmed; not confirmed: 601 Reception\ntold @wardens" in out.getvalue()


def test_a_schedule_or_template_escalating_without_confirm_is_a_config_problem(tmp_path):
    raw: dict = {
        "phones": {"601": {"uri": "sip:601@127.0.0.1"}},
        "templates": {"t": {"text": "x", "escalate_to": "601"}},
        "schedules": {"s": {"cron": "* * * * *", "targets": "601", "text": "x",
                            "confirm": True, "escalate_to": "@nobody"}},
    }  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        parse(raw, tmp_path / "t.toml", {})
    file = tmp_path / "t.toml"
    assert refused.value.problems == [
        f"{file}: templates.t.escalate_to: tells who did not confirm: it needs confirm = true",
        f"{file}: schedules.s.escalate_to: '@nobody' is not a phone, person or group",
    ]


def test_the_escalation_names_the_phones_and_fits_the_message_limit():
    def label(ext: str) -> str:
        return {"602": "Lobby"}.get(ext, "")

    assert escalation_text(["602", "604"], label, "Fire drill", 160) == (
        "Not confirmed at 602 Lobby, 604: Fire drill"
    )
    cut = escalation_text(["602"], label, "x" * 300, 160)
    assert len(cut) == 160 and cut.endswith("…")
