"""Confirmations: `confirm TARGETS TEXT`, the OK key on the screen, the phone's press at [desk].

The relay runs on the recording sender (what each phone was asked is kept);
the desk endpoint is reached as a phone (or a stranger) would, over raw HTTP
on loopback: 127.0.0.1 for the phone itself, 127.0.0.2 for another one.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from deskbot.directory import loader
from deskbot.directory.snapshot import Phone
from deskbot.relay import grammar, report
from deskbot.relay.confirm import MARGIN, Confirmer, host_of, sample_ask, state_of, why_not
from deskbot.relay.grammar import Send, UsageError, UseTemplate
from deskbot.relay.relay import Relay
from deskbot.relay.values import Answer, ChatUser, Dispatch, Policy, Request
from deskbot.senders.base import Delivery, body_limit, wire_bytes
from deskbot.senders.recording import RecordingSender
from deskbot.senders.screens import snom
from deskbot.settings.load import parse
from deskbot.settings.schema import Desk
from deskbot.sources.desk import MISSES_PER_MINUTE, DeskSource
from deskbot.store.audit import AuditLog
from deskbot.store.base import FollowUp, Thread

BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)

ALICE = ChatUser("slack", "U0ALICE01", "Alice S")
DESK = "http://127.0.0.1:9122"


def test_confirm_is_a_send_or_a_template_send_asked_for_an_ok():
    assert grammar.parse("confirm 601 fire drill at 14:00") == Send(
        "601", "fire drill at 14:00", confirm=True
    )
    assert grammar.parse("confirm @floor !firedrill time=3pm") == UseTemplate(
        "@floor", "firedrill", (("time", "3pm"),), confirm=True
    )
    assert grammar.parse("601 confirm this") == Send("601", "confirm this")
    for wrong in ("confirm", "confirm 601", "confirm help", "confirm who 601"):
        with pytest.raises(UsageError):
            grammar.parse(wrong)


def _settings(tmp_path: Path, desk: bool = True):
    raw: dict = {
        "phones": {
            "601": {"uri": "sip:601@127.0.0.1:5070", "label": "Reception", "format": "snom-xml"},
            "602": {"uri": "sip:602@127.0.0.2:5070", "label": "Lobby", "format": "yealink-xml"},
            "603": {"uri": "sip:603@127.0.0.1:5071", "label": "Kitchen"},
        },
        "people": {"alice": {"phone": "601", "slack": "U0ALICE01"}},
        "groups": {"floor": {"members": ["601", "602", "603"]}},
        "templates": {"drill": {"text": "Fire drill at {time}", "confirm": True}},
    }
    if desk:
        raw["desk"] = {"listen": "127.0.0.1:0", "url": DESK}
    return parse(raw, tmp_path / "t.toml", {}).settings


def _relay(tmp_path: Path, phones: RecordingSender, desk: bool = True, audit=None) -> Relay:
    s = _settings(tmp_path, desk)
    audit = audit or AuditLog(tmp_path / "audit.sqlite3")
    return Relay(phones, loader.from_settings(s), Policy.from_settings(s), audit)


async def _send(relay: Relay, text: str) -> report.Report | Answer:
    job = relay.prepare(Request(ALICE, text))
    if not isinstance(job, Dispatch):
        assert isinstance(job, Answer)
        return job
    return await relay.deliver(job)


@BOTH
async def test_a_confirm_send_puts_an_ok_key_on_screens_that_have_keys(tmp_path, store):
    phones = RecordingSender()
    relay = _relay(tmp_path, phones, audit=store())
    result = await _send(relay, "confirm @floor Fire drill at 14:00")
    assert isinstance(result, report.Report)
    assert set(phones.asks) == {"601", "602"}  # 603 is a plain MESSAGE: no key to press
    urls = {ext: ask.url for ext, ask in phones.asks.items()}
    assert all(u.startswith(DESK + "/c/") and len(u) > len(DESK) + 20 for u in urls.values())
    assert urls["601"] != urls["602"]
    assert {a.label for a in phones.asks.values()} == {"OK"}
    shown = report.plain(result)
    assert "603 (Kitchen): 200 OK (1 ms); cannot confirm (format message)" in shown
    assert "601 (Reception): 200 OK (1 ms); confirm asked" in shown
    # a plain send asks nothing
    await _send(relay, "601 hello")
    assert phones.texts("601")[-1].endswith("hello") and len(phones.asks) == 2
    assert relay.confirmer is not None
    states = [c.state for c in relay.confirmer.store.of(result.command_id)]
    assert states == ["waiting", "waiting", "unsupported"]


async def test_a_template_with_confirm_asks_and_without_a_desk_url_confirm_is_refused(tmp_path):
    phones = RecordingSender()
    relay = _relay(tmp_path, phones)
    await _send(relay, "601 !drill time=14:00")
    assert set(phones.asks) == {"601"}
    refused = await _send(_relay(tmp_path / "b", RecordingSender(), desk=False), "confirm 601 x")
    assert isinstance(refused, Answer) and refused.error and "[desk] url" in refused.text


def test_a_phone_behind_a_sites_edge_gets_no_key_and_is_told_cannot_confirm(tmp_path):
    audit = AuditLog(tmp_path / "audit.sqlite3")
    confirmer = Confirmer(audit.confirmations())
    remote = Phone("701", "sip:701@10.1.0.7", "Lyon desk", "snom-xml", site="lyon")
    assert confirmer.ask(3, remote, DESK, 600) is None  # a key would point where it cannot go
    assert [c.state for c in audit.confirmations().of(3)] == ["unsupported"]
    line = report.Line(
        remote, Delivery(remote.uri, 200, "OK", 1.0), confirm=why_not("snom-xml", "lyon")
    )
    assert "cannot confirm (behind site lyon's edge)" in report.line_text(line)
    audit.close()


@BOTH
def test_a_press_counts_once_and_only_for_its_own_phone_until_it_expires(
    store, backend, tmp_path, request
):
    now = [1000.0]
    audit = store()
    confirmer = Confirmer(audit.confirmations(), clock=lambda: now[0])
    told = []
    confirmer.on_confirm.append(told.append)
    reception = Phone("601", "sip:601@127.0.0.1:5070", "Reception", "snom-xml")
    lobby = Phone("602", "sip:602@127.0.0.2:5070", "Lobby", "yealink-xml")
    kitchen = Phone("603", "sip:603@127.0.0.1:5071", "Kitchen")
    ask = confirmer.ask(7, reception, DESK, 600)
    other = confirmer.ask(7, lobby, DESK, 600)
    assert ask and other and confirmer.ask(7, kitchen, DESK, 600) is None
    path, other_path = ask.url.removeprefix(DESK), other.url.removeprefix(DESK)
    kept = store("r2").confirmations()  # another process (replica) reads the same rows
    assert [state_of(c, now[0]) for c in kept.of(7)] == ["waiting", "waiting", "unsupported"]
    assert confirmer.press(other_path, "127.0.0.1") is None  # 602's token from 601's address
    assert confirmer.press("/c/" + "A" * 22, "127.0.0.1") is None
    assert confirmer.press(path[:-1], "127.0.0.1") is None
    assert told == []
    now[0] += 5
    first = confirmer.press(path, "127.0.0.1")
    assert first and first.state == "confirmed" and first.confirmed_at == 1005.0
    again = confirmer.press(path, "127.0.0.1")
    assert again and again.confirmed_at == 1005.0
    assert [c.extension for c in told] == ["601"]  # recorded and told once
    now[0] += 600 + MARGIN
    assert confirmer.press(other_path, "127.0.0.2") is None  # expired
    assert [state_of(c, now[0]) for c in kept.of(7)] == [
        "confirmed",
        "not confirmed",
        "unsupported",
    ]
    token = ask.url.rpartition("/")[2]
    if backend == "sqlite":
        assert token.encode() not in (tmp_path / "audit.sqlite3").read_bytes()
    else:
        rows = request.getfixturevalue("postgres").query(
            audit.path.rsplit("/", 1)[1], "SELECT * FROM confirms"
        )
        assert len(rows) == 3 and token not in repr(rows)


@BOTH
def test_two_replicas_pressing_one_token_record_it_once_and_keep_what_follows(store):
    first, second = store("r1").confirmations(), store("r2").confirmations()
    where = Thread("matrix", "@alice:x", "!room", "$ev")
    follow = FollowUp("@wardens", "Fire drill at 14:00", "monitoring", (("alertname", "Disk"),))
    first.remember(9, where, 2000.0, follow)
    second.remember(9, Thread("slack", "U1", "C1", ""), 3000.0)  # a repeat changes nothing
    assert second.where(9) == where and second.follow_up(9) == replace(follow, due=2000.0)
    first.ask(9, "601", "snom-xml", "t" * 22, "", 5000.0)
    presses = [first.press("t" * 22, "10.0.0.1", 1500.0), second.press("t" * 22, "", 1501.0)]
    assert sorted(bool(p and p[1]) for p in presses) == [False, True]
    assert {p[0].confirmed_at for p in presses if p} == {1500.0}
    assert [c.extension for c in second.unposted()] == ["601"]
    first.posted(9, "601")
    assert second.unposted() == []
    assert second.overdue(1999.0) == [] and second.overdue(2000.0) == [9]
    first.summarized(9)
    assert second.overdue(2000.0) == []
    assert second.follow_up(9) == FollowUp(
        "@wardens", "", "monitoring", (("alertname", "Disk"),), 2000.0
    )


def test_a_press_must_come_from_the_phones_ip_address():
    assert host_of(Phone("1", "sip:1@10.0.0.5:5060")) == "10.0.0.5"
    assert host_of(Phone("1", "sip:1@[::1]:5060")) == "::1"
    assert host_of(Phone("1", "sip:1@9.9.9.9", http="http://10.0.0.7:8080/x")) == "10.0.0.7"
    assert host_of(Phone("1", "sip:1@phone.example.com")) == ""  # a name: any address


def _get(url: str, source: str = "127.0.0.1") -> tuple[int, bytes, dict[str, str]]:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=5, source_address=(source, 0)
    )
    try:
        conn.request("GET", parts.path)
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.headers)
    finally:
        conn.close()


async def test_the_desk_endpoint_thanks_a_press_in_the_phones_xml_and_404s_the_rest(
    tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    audit = AuditLog(tmp_path / "audit.sqlite3")
    confirmer = Confirmer(audit.confirmations())
    told = []
    confirmer.on_confirm.append(told.append)
    desk = DeskSource(Desk(listen="127.0.0.1:0", url="http://127.0.0.1"), None, confirmer)
    await desk.start()
    try:
        base = f"http://127.0.0.1:{desk.port}"
        reception = Phone("601", "sip:601@127.0.0.1:5070", "Reception", snom.NAME)
        lobby = Phone("602", "sip:602@127.0.0.2:5070", "Lobby", "yealink-xml")
        mine = confirmer.ask(9, reception, base, 600)
        theirs = confirmer.ask(9, lobby, base, 600)
        assert mine and theirs
        status, body, headers = await asyncio.to_thread(_get, mine.url)
        assert status == 200 and headers["Content-Type"].startswith("text/xml")
        root = ET.fromstring(body)
        assert root.tag == "SnomIPPhoneText" and "Thank you" in (root.findtext("Text") or "")
        assert [c.extension for c in told] == ["601"]
        assert (await asyncio.to_thread(_get, mine.url))[0] == 200
        assert len(told) == 1  # a second press changes nothing
        assert (await asyncio.to_thread(_get, theirs.url, "127.0.0.1"))[0] == 404
        status, body, _ = await asyncio.to_thread(_get, theirs.url, "127.0.0.2")
        assert status == 200 and ET.fromstring(body).tag == "YealinkIPPhoneTextScreen"
        assert [c.extension for c in told] == ["601", "602"]
        token = mine.url.rpartition("/")[2]
        assert token not in caplog.text and theirs.url.rpartition("/")[2] not in caplog.text

        def misses() -> list[int]:
            return [_get(f"{base}/c/guess{n:04d}")[0] for n in range(MISSES_PER_MINUTE + 2)]

        answers = await asyncio.to_thread(misses)  # one miss came before: 602's token
        assert answers[: MISSES_PER_MINUTE - 1] == [404] * (MISSES_PER_MINUTE - 1)
        assert answers[MISSES_PER_MINUTE - 1 :] == [429, 429, 429]
        third = confirmer.ask(9, Phone("604", "sip:604@127.0.0.1", "", snom.NAME), base, 600)
        assert third and (await asyncio.to_thread(_get, third.url))[0] == 429  # limited now
        assert (await asyncio.to_thread(_get, third.url, "127.0.0.3"))[0] == 404  # not 604's
        assert len(told) == 2
    finally:
        await desk.stop()


def test_a_file_of_the_first_confirmations_gains_the_escalation_columns(tmp_path):
    AuditLog(tmp_path / "audit.sqlite3").close()
    with sqlite3.connect(tmp_path / "audit.sqlite3") as db:  # as the first confirmations left it
        db.execute("DROP TABLE confirm_threads")
        db.execute(
            "CREATE TABLE confirm_threads (command_id INTEGER PRIMARY KEY, chat TEXT NOT NULL,"
            " sender_id TEXT NOT NULL, place TEXT NOT NULL, thread TEXT NOT NULL,"
            " due REAL NOT NULL DEFAULT 0, summarized INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute("INSERT INTO confirm_threads VALUES (3, 'console', 'alice', '', '', 5, 0)")
        db.execute("PRAGMA user_version = 6")
    kept = AuditLog(tmp_path / "audit.sqlite3").confirmations()
    assert kept.where(3) == Thread("console", "alice", "", "")
    assert kept.follow_up(3) == FollowUp(due=5.0) and kept.overdue(5) == [3]


def test_a_text_that_fits_a_screen_only_without_the_ok_key_is_refused_as_too_long(tmp_path):
    raw: dict = {
        "phones": {"605": {"uri": "sip:605@127.0.0.1:9", "format": "poly-push",
                           "http": "http://127.0.0.1:9/push"}},
        "message": {"max_chars": 1000, "sender_prefix": False},
        "desk": {"listen": "127.0.0.1:0", "url": DESK},
        "push": {"username": "deskbot", "password_env": "P"},
    }  # fmt: skip
    s = parse(raw, tmp_path / "t.toml", {"P": "secret"}).settings
    relay = Relay(RecordingSender(), loader.from_settings(s), Policy.from_settings(s),
                  AuditLog(tmp_path / "audit.sqlite3"))  # fmt: skip
    most = body_limit("poly-push", 1200)
    # the longest text of "&" (5 bytes as XML) that fits the screen without a key
    fits = max(n for n in range(1, 1000) if wire_bytes("poly-push", "&" * n) <= most)
    assert wire_bytes("poly-push", "&" * fits, "", sample_ask(DESK)) > most

    def send(confirm: bool) -> Answer | Dispatch:
        got = relay.prepare(Request(ALICE, "&" * fits, targets="605", confirm=confirm))
        assert isinstance(got, Answer | Dispatch)
        return got

    assert isinstance(send(False), Dispatch)
    refused = send(True)
    assert isinstance(refused, Answer) and refused.problem == "too-long"
    assert "escaped as XML with the OK key" in refused.text
