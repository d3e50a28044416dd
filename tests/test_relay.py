"""Policy in the relay: access, limits, history; on the recording sender (no pjsua2, no sockets)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import Chat, until

from deskbot.directory import loader
from deskbot.relay import report
from deskbot.relay.relay import Relay
from deskbot.relay.values import Answer, ChatUser, Dispatch, Policy, Request
from deskbot.relay.window import SlidingWindow
from deskbot.senders.recording import RecordingSender
from deskbot.settings.load import parse
from deskbot.settings.schema import Settings
from deskbot.sources.serve import serve
from deskbot.store.audit import AuditLog
from deskbot.store.base import Answer as Recorded
from deskbot.store.base import Planned

ALICE = ChatUser("slack", "U0ALICE01", "Alice S")
BOB = ChatUser("slack", "U0BOB0001", "bob")
STRANGER = ChatUser("matrix", "@eve:example.com", "Eve")
EXTENSIONS = ("486", "487", "488")


def settings(**overrides: dict) -> Settings:
    raw = {
        "phones": {
            ext: {"uri": f"sip:{ext}@10.0.0.{ext[1:]}", "label": f"Desk {ext}"}
            for ext in EXTENSIONS
        },
        "people": {
            "alice": {"phone": "486", "slack": "U0ALICE01"},
            "bob": {"phone": "487", "slack": "U0BOB0001"},
        },
        "groups": {"all": {"members": list(EXTENSIONS)}},
        "access": {"senders": ["alice", "bob"], "admins": ["alice"]},
        **overrides,
    }
    return parse(raw, Path("t.toml"), {}).settings


@pytest.fixture
def phones() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def relay_for(phones, store):
    """A relay on the test's store (SQLite; PostgreSQL where parametrized with BOTH)."""

    def make(**overrides) -> Relay:
        s = settings(**overrides)
        policy = Policy.from_settings(s)
        return Relay(phones, loader.from_settings(s), policy, store())

    return make


BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)


def ask(relay: Relay, user: ChatUser, text: str, place: str = "") -> Answer | Dispatch:
    return relay.prepare(Request(user, text, place))


async def handle(
    relay: Relay, user: ChatUser, text: str, place: str = ""
) -> Answer | report.Report:
    prepared = ask(relay, user, text, place)
    return prepared if isinstance(prepared, Answer) else await relay.deliver(prepared)


async def test_send_puts_the_sender_name_before_the_text_on_the_phone(relay_for, phones):
    relay = relay_for()
    result = await handle(relay, ALICE, "487 meeting moved")
    assert isinstance(result, report.Report) and result.ok
    assert phones.texts("487") == ["alice: meeting moved"]


async def test_unmapped_sender_is_refused_when_senders_is_a_list(relay_for, phones):
    relay = relay_for()
    answer = await handle(relay, STRANGER, "486 hi")
    assert isinstance(answer, Answer) and answer.error
    assert "not allowed" in answer.text
    assert phones.sent == []


async def test_anyone_may_send_with_star_and_the_display_name_is_shown(relay_for, phones):
    relay = relay_for(access={"senders": "*", "admins": []})
    result = await handle(relay, STRANGER, "486 hi")
    assert isinstance(result, report.Report) and result.ok
    assert phones.texts("486") == ["Eve: hi"]


async def test_group_size_cap_applies_to_non_admins_only(relay_for, phones):
    relay = relay_for(limits={"max_group_size": 2})
    refused = ask(relay, BOB, "@all hello")
    assert isinstance(refused, Answer) and "at most 2 at once" in refused.text
    allowed = ask(relay, ALICE, "@all hello")
    assert isinstance(allowed, Dispatch) and len(allowed.phones) == 3


async def test_per_sender_rate_limit_gives_a_clear_reply(relay_for):
    relay = relay_for(limits={"per_sender_per_minute": 2})
    assert isinstance(ask(relay, BOB, "486 one"), Dispatch)
    assert isinstance(ask(relay, BOB, "486 two"), Dispatch)
    third = ask(relay, BOB, "486 three")
    assert isinstance(third, Answer) and third.error
    assert third.text.startswith("slow down: you may send 2 commands a minute; try again in ")
    assert isinstance(ask(relay, ALICE, "486 other sender"), Dispatch)


async def test_per_phone_rate_limit_skips_that_phone_and_says_why(relay_for, phones):
    relay = relay_for(limits={"per_phone_per_minute": 1})
    await handle(relay, ALICE, "486 first")
    result = await handle(relay, BOB, "486,487 second")
    assert isinstance(result, report.Report)
    text = report.plain(result)
    assert "🚫 486 (Desk 486): not sent: 486 got 1 messages in the last minute" in text
    assert "✅ 487 (Desk 487): 200 OK" in text
    assert "1/2 delivered" in text
    assert phones.texts("486") == ["alice: first"]


async def test_history_shows_own_sends_and_all_only_for_admins(relay_for):
    relay = relay_for()
    await handle(relay, ALICE, "486 a")
    await handle(relay, BOB, "@all b")
    mine = await handle(relay, BOB, "history")
    assert isinstance(mine, Answer)
    assert "→ @all (1 chars): 3/3 delivered" in mine.text and "→ 486" not in mine.text
    denied = await handle(relay, BOB, "history all")
    assert isinstance(denied, Answer) and denied.error
    everyone = await handle(relay, ALICE, "history all")
    assert isinstance(everyone, Answer)
    assert "alice → 486" in everyone.text and "bob → @all" in everyone.text


async def test_audit_rows_hold_who_where_and_codes_but_never_the_text(relay_for, tmp_path):
    relay = relay_for()
    await handle(relay, ALICE, "486,487 secret plans", place="C0ROOM")
    db = AuditLog(tmp_path / "audit.sqlite3").db
    [cmd] = db.execute(
        "SELECT chat, sender_id, person, place, targets, text_chars, phones FROM commands"
    ).fetchall()
    assert cmd == ("slack", "U0ALICE01", "alice", "C0ROOM", "486,487", 12, 2)
    rows = db.execute("SELECT extension, code, reason FROM deliveries ORDER BY extension")
    assert rows.fetchall() == [("486", 200, "OK"), ("487", 200, "OK")]
    dump = "\n".join(db.iterdump())
    assert "secret plans" not in dump


def test_sliding_window_frees_slots_as_time_passes():
    now = [0.0]
    window = SlidingWindow(2, 60.0, clock=lambda: now[0])
    window.add("k")
    now[0] = 10.0
    window.add("k")
    assert window.retry_after("k") == pytest.approx(50.0)
    now[0] = 60.5
    assert window.retry_after("k") == 0.0


async def test_who_names_the_phones_and_shows_addresses_to_admins_only(relay_for, phones):
    relay = relay_for()
    for_bob = ask(relay, BOB, "who @all")
    assert isinstance(for_bob, Answer) and not for_bob.error
    assert for_bob.text.splitlines() == [
        "@all → 3 phone(s):",
        "• 486 (Desk 486) (SIP message)",
        "• 487 (Desk 487) (SIP message)",
        "• 488 (Desk 488) (SIP message)",
    ]
    for_alice = ask(relay, ALICE, "who bob")
    assert isinstance(for_alice, Answer)
    assert "• 487 (Desk 487) at sip:487@10.0.0.87" in for_alice.text


# -- idempotency and stale commands ------------------------------------------------


@BOTH
async def test_a_command_that_comes_in_again_is_neither_sent_nor_answered_again(relay_for, phones):
    relay = relay_for()
    chat = Chat()
    request = Request(ALICE, "487 fire drill", "!room", key="$event1")
    first = await serve(relay, request, chat)
    again = await serve(relay, request, chat)
    assert isinstance(first, report.Report) and first.ok
    assert again is None
    assert phones.texts("487") == ["alice: fire drill"]
    assert len(chat.shown) == 1 and "✅ 487 (Desk 487): 200 OK" in chat.shown[0]


@BOTH
async def test_a_finished_command_whose_answer_was_lost_is_answered_once_from_the_log(
    relay_for, phones
):
    relay = relay_for()
    request = Request(ALICE, "486,487 lunch", "!room", key="$event2")

    class Lost(Chat):
        async def report(self, result: report.Report) -> None:
            raise ConnectionError("the homeserver went away")

    with pytest.raises(ConnectionError):
        await serve(relay, request, Lost())
    chat = Chat()
    await serve(relay, request, chat)
    await serve(relay, request, chat)
    assert phones.texts("486") == ["alice: lunch"] and phones.texts("487") == ["alice: lunch"]
    [shown] = chat.shown
    assert "✅ 486 (Desk 486): 200 OK" in shown and "2/2 delivered" in shown


@BOTH
async def test_an_answer_that_could_not_be_posted_is_given_when_the_command_comes_again(
    relay_for,
):
    relay = relay_for()
    request = Request(ALICE, "who 486", "!room", key="$event-who")

    class Lost(Chat):
        async def answer(self, answer) -> None:
            raise ConnectionError("the homeserver went away")

    with pytest.raises(ConnectionError):
        await serve(relay, request, Lost())
    chat = Chat()
    await serve(relay, request, chat)
    await serve(relay, request, chat)  # answered now: once
    [shown] = chat.shown
    assert "486 (Desk 486)" in shown


@BOTH
async def test_a_send_cut_off_by_a_crash_reports_what_was_confirmed_and_sends_nothing_again(
    relay_for, phones, tmp_path
):
    relay = relay_for()
    request = Request(ALICE, "486,487 evacuate", "!room", key="$event3")
    job = relay.prepare(request)
    assert isinstance(job, Dispatch)
    # what a crash mid-send leaves: the command row, one phone's answer, no end mark
    audit = relay.audit
    assert audit is not None
    plan = [Planned(p.extension, p.uri, p.label, "") for p in job.phones]
    command_id = audit.command(
        key=request.key,
        chat="slack",
        sender_id=ALICE.id,
        person="alice",
        place="!room",
        targets="486,487",
        text_chars=8,
        plan=plan,
    )
    audit.delivery(command_id, Recorded("486", job.phones[0].uri, 200, "OK", 4.0))
    audit.flush()
    audit.close()  # what was flushed is written (PostgreSQL writes it on its writer thread)
    restarted = relay_for()  # a new process: same log, no memory
    chat = Chat()
    await serve(restarted, request, chat)
    await serve(restarted, request, chat)
    assert phones.sent == []
    [shown] = chat.shown
    assert "✅ 486 (Desk 486): 200 OK" in shown
    assert "⚠️ 487 (Desk 487): no answer — deskbot or its SIP agent restarted while sending" in shown
    assert "1/2 delivered" in shown


@BOTH
async def test_a_command_older_than_max_age_is_answered_and_reaches_no_phone(relay_for, phones):
    relay = relay_for(message={"max_age": 300})
    chat = Chat()
    old = Request(ALICE, "486 fire drill now", "!room", key="$old", sent_at=time.time() - 8040)
    await serve(relay, old, chat)
    await serve(relay, old, chat)
    assert phones.sent == []
    assert chat.shown == [
        "⚠️ not sent: this command waited 2 h 14 min while deskbot was down; "
        "send it again if it still matters"
    ]
    fresh = Request(ALICE, "486 fire drill now", "!room", key="$new", sent_at=time.time() - 5)
    assert isinstance(await serve(relay, fresh, chat), report.Report)
    assert phones.texts("486") == ["alice: fire drill now"]


async def test_nothing_is_sent_when_the_audit_log_cannot_record_the_command(relay_for, phones):
    relay = relay_for()
    assert relay.audit is not None
    relay.audit.db.execute("PRAGMA query_only = ON")  # as a full or read-only disk refuses writes
    chat = Chat()
    result = await serve(relay, Request(ALICE, "486 hello", key="$e"), chat)
    assert isinstance(result, Answer) and result.error
    assert phones.sent == []
    assert chat.shown == [
        "⚠️ not sent: deskbot cannot write its audit log, and sends nothing it cannot record. "
        "An admin should check deskbot's log."
    ]


# -- probes and formats -------------------------------------------------------------


async def test_admins_probe_a_group_and_get_a_summary_of_phones_that_answer(relay_for, phones):
    phones.answers = {"488": 408}
    relay = relay_for()
    result = await handle(relay, ALICE, "probe @all")
    assert isinstance(result, report.Report) and result.probe
    assert [p.extension for p in phones.probed] == list(EXTENSIONS)
    assert phones.sent == []  # no text reaches any phone
    text = report.plain(result)
    assert text.splitlines()[-1] == "2/3 phones answer"
    assert "488 (Desk 488): 408 Request Timeout — no answer" in text
    history = ask(relay, ALICE, "history all")
    assert isinstance(history, Answer) and history.text == "no sends yet"


async def test_probe_is_for_admins_only(relay_for, phones):
    relay = relay_for()
    answer = await handle(relay, BOB, "probe 486")
    assert isinstance(answer, Answer) and answer.error
    assert answer.text.startswith("only admins may probe phones")
    assert phones.probed == []
    usage = await handle(relay, ALICE, "probe")
    assert isinstance(usage, Answer) and "usage: `probe TARGETS`" in usage.text


async def test_probes_do_not_use_up_a_phones_message_limit(relay_for, phones):
    relay = relay_for(limits={"per_phone_per_minute": 1})
    for _ in range(3):
        probed = await handle(relay, ALICE, "probe 487")
        assert isinstance(probed, report.Report) and probed.ok
    sent = await handle(relay, ALICE, "487 still reachable")
    assert isinstance(sent, report.Report) and sent.ok
    assert phones.texts("487") == ["alice: still reachable"]


async def test_each_phone_reaches_the_sender_with_its_format_and_the_plain_text(relay_for, phones):
    phones_cfg = {
        "486": {"uri": "sip:486@10.0.0.86", "format": "message"},
        "487": {"uri": "sip:487@10.0.0.87"},
        "488": {"uri": "sip:488@10.0.0.88", "label": "Lobby"},
    }
    relay = relay_for(phones=phones_cfg, message={"format": "snom-infobox"})
    result = await handle(relay, ALICE, "@all line one\nline two")
    assert isinstance(result, report.Report) and result.ok
    assert [(p.extension, p.format) for p, _ in phones.sent] == [
        ("486", "message"),
        ("487", "snom-infobox"),
        ("488", "snom-infobox"),
    ]
    assert {text for _, text in phones.sent} == {"alice: line one\nline two"}  # never XML here


async def test_who_and_help_say_a_200_from_an_infobox_phone_means_accepted_not_shown(relay_for):
    relay = relay_for(
        phones={"486": {"uri": "sip:486@10.0.0.86", "label": "Desk 486", "format": "snom-infobox"}},
        people={"alice": {"phone": "486", "slack": "U0ALICE01"}},
        groups={},
        access={"senders": ["alice"], "admins": ["alice"]},
    )
    who = ask(relay, ALICE, "who 486")
    assert isinstance(who, Answer)
    assert "• 486 (Desk 486) at sip:486@10.0.0.86 (Snom Infobox)" in who.text
    assert "200 means the phone accepted the notification, not that it is on the screen" in who.text
    help_ = ask(relay, ALICE, "help")
    assert isinstance(help_, Answer)
    assert "`probe TARGETS`" in help_.text
    assert "not that it is on the screen" in help_.text


async def test_a_copy_of_a_command_arriving_while_it_is_sent_is_neither_sent_nor_answered(
    relay_for, phones
):
    relay = relay_for()
    phones.gate = asyncio.Event()
    first, second = Chat(), Chat()
    request = Request(ALICE, "486 fire drill", "!room", key="$dup")
    running = asyncio.create_task(serve(relay, request, first))
    await until(lambda: relay.audit.seen("$dup"), what="the first copy recorded")
    assert await serve(relay, request, second) is None  # the first copy will answer
    phones.gate.set()
    await running
    assert phones.texts("486") == ["alice: fire drill"]
    assert len(first.shown) == 1 and second.shown == []


async def test_screens_are_titled_with_who_sends(relay_for):
    from deskbot.senders.base import TITLE, Delivery

    titles: list[str] = []

    def answer(phone, text):
        titles.append(TITLE.get())
        return Delivery(phone.uri, 200, "OK", 1.0)

    relay = relay_for(access={"senders": "*", "admins": []})
    relay.sender = RecordingSender(answers={"486": answer, "487": answer})
    await handle(relay, ALICE, "486 hi")
    await handle(relay, STRANGER, "487 hi")
    assert titles == ["alice", "Eve"]


async def test_who_shows_each_phones_format(relay_for):
    relay = relay_for(
        phones={
            "486": {"uri": "sip:486@10.0.0.86", "format": "snom-xml"},
            "487": {"uri": "sip:487@10.0.0.87", "format": "yealink-xml"},
        },
        people={},
        groups={},
        access={"senders": "*", "admins": []},
    )
    who = ask(relay, BOB, "who 486,487")
    assert isinstance(who, Answer)
    assert who.text.splitlines()[1:] == ["• 486 (Snom XML screen)", "• 487 (Yealink XML screen)"]


def test_help_names_every_command_of_the_grammar_and_its_examples_parse(relay_for):
    """One help text for every source (console/demo, Slack, Matrix): each command word of the
    chat grammar is in it, and every example written in it is a command the grammar takes."""
    import re

    from deskbot.relay import grammar

    relay = relay_for(templates={"drill": {"text": "Drill at {time}", "targets": "@all"}})
    help_ = ask(relay, ALICE, "help")
    assert isinstance(help_, Answer)
    for shown in (
        "`in 20s|15m|2h TARGETS TEXT`",
        "`at 14:55 TARGETS TEXT`",
        "`scheduled`",
        "`cancel ID`",
        "`templates`",
        "`!TEMPLATE key=value...`",
        "`confirm TARGETS TEXT`",
        "`who TARGET`",
        "`history`",
    ):
        assert shown in help_.text
    examples = {"`486 meeting moved`", "`@sales lunch is here`", "`history all`"}
    concrete = [e for e in re.findall(r"`[^`]+`", help_.text) if e in examples]
    assert len(concrete) == len(examples)
    for example in concrete:
        grammar.parse(example.strip("`"))  # no UsageError
    for template in ("in 20s 486 x", "at 14:55 486 x", "cancel 3", "486 !drill time=3", "!drill"):
        grammar.parse(template)
