"""Policy in the relay: access, limits, history; with the real SIP agent and simulated phones."""

from __future__ import annotations

from pathlib import Path

import pytest

from deskbot import config, report
from deskbot.relay import Answer, ChatUser, Dispatch, Relay, SlidingWindow
from deskbot.sip.agent import SipAgent
from deskbot.sip.phonesim import SimulatedPhone
from deskbot.store import AuditLog

ALICE = ChatUser("slack", "U0ALICE01", "Alice S")
BOB = ChatUser("slack", "U0BOB0001", "bob")
STRANGER = ChatUser("matrix", "@eve:example.com", "Eve")


def settings(ports: dict[str, int], **overrides: dict) -> config.Settings:
    raw = {
        "sip": {"listen": "127.0.0.1:0", "timeout": 1.0},
        "phones": {
            ext: {"uri": f"sip:{ext}@127.0.0.1:{port}", "label": f"Desk {ext}"}
            for ext, port in ports.items()
        },
        "people": {
            "alice": {"phone": "486", "slack": "U0ALICE01"},
            "bob": {"phone": "487", "slack": "U0BOB0001"},
        },
        "groups": {"all": {"members": list(ports)}},
        "access": {"senders": ["alice", "bob"], "admins": ["alice"]},
        **overrides,
    }
    return config.parse(raw, Path("t.toml"), {}).settings


@pytest.fixture
async def phones():
    started = [await SimulatedPhone(ext).start() for ext in ("486", "487", "488")]
    yield {p.extension: p for p in started}
    for p in started:
        p.close()


@pytest.fixture
async def relay_for(phones, tmp_path):
    agents: list[SipAgent] = []

    async def make(**overrides) -> Relay:
        s = settings({e: p.port for e, p in phones.items()}, **overrides)
        agent = SipAgent(s.sip)
        await agent.start()
        agents.append(agent)
        return Relay(s, agent, AuditLog(tmp_path / "audit.sqlite3"))

    yield make
    for agent in agents:
        await agent.close()


async def test_send_puts_the_sender_name_before_the_text_on_the_phone(relay_for, phones):
    relay = await relay_for()
    result = await relay.handle(ALICE, "487 meeting moved")
    assert isinstance(result, report.Report) and result.ok
    assert phones["487"].screen.last == "alice: meeting moved"


async def test_unmapped_sender_is_refused_when_senders_is_a_list(relay_for, phones):
    relay = await relay_for()
    answer = await relay.handle(STRANGER, "486 hi")
    assert isinstance(answer, Answer) and answer.error
    assert "not allowed" in answer.text
    assert phones["486"].screen.lines == []


async def test_anyone_may_send_with_star_and_the_display_name_is_shown(relay_for, phones):
    relay = await relay_for(access={"senders": "*", "admins": []})
    result = await relay.handle(STRANGER, "486 hi")
    assert isinstance(result, report.Report) and result.ok
    assert phones["486"].screen.last == "Eve: hi"


async def test_group_size_cap_applies_to_non_admins_only(relay_for, phones):
    relay = await relay_for(limits={"max_group_size": 2})
    refused = relay.prepare(BOB, "@all hello")
    assert isinstance(refused, Answer) and "at most 2 at once" in refused.text
    allowed = relay.prepare(ALICE, "@all hello")
    assert isinstance(allowed, Dispatch) and len(allowed.phones) == 3


async def test_per_sender_rate_limit_gives_a_clear_reply(relay_for):
    relay = await relay_for(limits={"per_sender_per_minute": 2})
    assert isinstance(relay.prepare(BOB, "486 one"), Dispatch)
    assert isinstance(relay.prepare(BOB, "486 two"), Dispatch)
    third = relay.prepare(BOB, "486 three")
    assert isinstance(third, Answer) and third.error
    assert third.text.startswith("slow down: you may send 2 commands a minute; try again in ")
    assert isinstance(relay.prepare(ALICE, "486 other sender"), Dispatch)


async def test_per_phone_rate_limit_skips_that_phone_and_says_why(relay_for, phones):
    relay = await relay_for(limits={"per_phone_per_minute": 1})
    await relay.handle(ALICE, "486 first")
    result = await relay.handle(BOB, "486,487 second")
    assert isinstance(result, report.Report)
    text = report.plain(result)
    assert "🚫 486 (Desk 486): not sent: 486 got 1 messages in the last minute" in text
    assert "✅ 487 (Desk 487): 200 OK" in text
    assert "1/2 delivered" in text
    assert phones["486"].screen.lines == ["alice: first"]


async def test_history_shows_own_sends_and_all_only_for_admins(relay_for):
    relay = await relay_for()
    await relay.handle(ALICE, "486 a")
    await relay.handle(BOB, "@all b")
    mine = await relay.handle(BOB, "history")
    assert isinstance(mine, Answer)
    assert "→ @all (1 chars): 3/3 delivered" in mine.text and "→ 486" not in mine.text
    denied = await relay.handle(BOB, "history all")
    assert isinstance(denied, Answer) and denied.error
    everyone = await relay.handle(ALICE, "history all")
    assert isinstance(everyone, Answer)
    assert "alice → 486" in everyone.text and "bob → @all" in everyone.text


async def test_audit_rows_hold_who_where_and_codes_but_never_the_text(relay_for, tmp_path):
    relay = await relay_for()
    await relay.handle(ALICE, "486,487 secret plans", place="C0ROOM")
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
    relay = await relay_for()
    for_bob = relay.prepare(BOB, "who @all")
    assert isinstance(for_bob, Answer) and not for_bob.error
    assert for_bob.text.splitlines() == [
        "@all → 3 phone(s):",
        "• 486 (Desk 486)",
        "• 487 (Desk 487)",
        "• 488 (Desk 488)",
    ]
    for_alice = relay.prepare(ALICE, "who bob")
    assert isinstance(for_alice, Answer)
    assert f"• 487 (Desk 487) at sip:487@127.0.0.1:{phones['487'].port}" in for_alice.text
