"""The web console's pieces without a browser: sessions, hashes, the [web] settings, the
live rows of a confirm send."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import bcrypt
import pytest
from test_config import BASE, problems

from deskbot.directory.snapshot import Phone
from deskbot.relay import report
from deskbot.senders.base import Delivery
from deskbot.sources.web import passwords
from deskbot.sources.web.sessions import FAILURES_PER_NAME, Sessions, SignInGuard
from deskbot.sources.web.watch import DONE, Watched, Watches, row_of
from deskbot.store.base import Confirmation

DESKBOT = str(Path(sys.executable).parent / "deskbot")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_its_idle_time_and_after_its_lifetime():
    clock = Clock()
    sessions = Sessions(idle=60, lifetime=300, clock=clock)
    _, cookie = sessions.start("alice")
    for _ in range(5):  # a request every 50 s keeps it alive...
        clock.now += 50
        assert sessions.find(cookie) is not None
    clock.now += 51  # ...until 300 s after sign-in, however busy
    assert sessions.find(cookie) is None
    _, idle = sessions.start("alice")
    clock.now += 61
    assert sessions.find(idle) is None


def test_a_forged_or_changed_cookie_names_no_session():
    sessions = Sessions(idle=60, lifetime=300)
    session, cookie = sessions.start("alice")
    assert sessions.find(cookie) is session
    sid, _, mac = cookie.partition(".")
    assert sessions.find(f"{sid}.{mac[:-1]}0" if mac[-1] != "0" else f"{sid}.{mac[:-1]}1") is None
    assert sessions.find(sid) is None
    assert sessions.find("x" * 10_000) is None
    other, _ = Sessions(idle=60, lifetime=300).start("alice")
    assert sessions.find(f"{other.id}.{mac}") is None


def test_failures_are_counted_per_name_and_per_address():
    guard = SignInGuard(clock=Clock())
    for i in range(FAILURES_PER_NAME):
        assert guard.wait("alice", f"10.0.0.{i}") == 0
        guard.failed("alice", f"10.0.0.{i}")
    assert guard.wait("alice", "10.9.9.9") > 0  # the name is guarded, from any address
    assert guard.wait("bob", "10.0.0.1") == 0


def test_hash_password_reads_stdin_and_prints_a_hash_that_checks():
    done = subprocess.run(
        [DESKBOT, "hash-password"], input="s3cret words\n", capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip()
    assert hashed.startswith("$2b$12$") and "s3cret" not in done.stdout
    assert passwords.verify("s3cret words", hashed)
    assert not passwords.verify("s3cret words ", hashed)
    assert not passwords.verify("s3cret words", None)


def test_hash_password_refuses_an_empty_or_overlong_password():
    for given in ("\n", "x" * 73 + "\n"):
        done = subprocess.run(
            [DESKBOT, "hash-password"], input=given, capture_output=True, text=True
        )
        assert done.returncode == 2 and done.stdout == ""
        assert "nothing printed" in done.stderr


def test_web_users_must_be_people_with_a_bcrypt_hash():
    good = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    assert problems(BASE + f'[web.users]\nalice = "{good}"\n') == []
    stranger = problems(BASE + f'[web.users]\nzed = "{good}"\n')
    assert stranger == ["deskbot.toml: web.users.zed: 'zed' is not in [people]: users are people"]
    plain = problems(BASE + '[web.users]\nalice = "plain"\n')
    assert any("web.users.alice" in p and "not a bcrypt hash" in p for p in plain), plain
    assert any("web.users: nobody can sign in" in p for p in problems(BASE + "[web]\n"))
    assert problems(BASE + "[web]\nldap = true\n") == [
        "deskbot.toml: web.ldap: signing in with the directory password needs [directory.ldap]"
    ]


async def test_behind_tls_the_cookie_is_secure_and_one_address_is_limited_across_names(tmp_path):
    import aiohttp

    from deskbot.directory import loader
    from deskbot.relay.relay import Relay
    from deskbot.relay.values import Policy
    from deskbot.senders.recording import RecordingSender
    from deskbot.settings.load import parse
    from deskbot.sources.web.app import WebSource
    from deskbot.sources.web.sessions import FAILURES_PER_ADDRESS
    from deskbot.store.audit import AuditLog

    hashed = bcrypt.hashpw(b"right one", bcrypt.gensalt(4)).decode()
    raw = {
        "phones": {"486": {"uri": "sip:486@127.0.0.1:9"}},
        "people": {"alice": {"phone": "486"}},
        "web": {"listen": "127.0.0.1:0", "users": {"alice": hashed}, "secure_cookie": True},
    }
    s = parse(raw, Path("x.toml"), {}).settings
    audit = AuditLog(tmp_path / "audit.sqlite3")
    relay = Relay(RecordingSender(), loader.from_settings(s), Policy.from_settings(s), audit)
    assert s.web is not None
    source = WebSource(s.web, relay, audit.sign_ins())
    await source.start()
    url = f"http://127.0.0.1:{source.port}/signin"
    try:
        async with aiohttp.ClientSession() as http:
            form = {"name": "alice", "password": "right one"}
            async with http.post(url, data=form, allow_redirects=False) as resp:
                assert resp.status == 303
                cookie = resp.headers["Set-Cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
            for i in range(FAILURES_PER_ADDRESS):  # a different name each time
                async with http.post(url, data={"name": f"u{i}", "password": "x"}) as resp:
                    assert resp.status == 401
            async with http.post(url, data=form, allow_redirects=False) as resp:
                assert resp.status == 429
                assert "Too many failed sign-ins" in await resp.text()
    finally:
        await source.stop()
    outcomes = [o for _, _, _, o in audit.sign_ins().recent(100)]
    assert outcomes.count("wrong-password") == FAILURES_PER_ADDRESS
    assert outcomes[0] == "rate-limited" and outcomes[-1] == "signed-in"
    audit.close()


async def test_a_confirm_sends_rows_keep_a_press_and_end_as_not_confirmed_after_the_wait():
    snom, plain = Phone("601", "sip:601@127.0.0.1", "Reception", "snom-xml"), Phone("602", "sip:x")
    rows = {
        "601": replace(row_of(snom, None), confirm="waiting"),
        "602": replace(row_of(plain, None), confirm="unsupported"),
    }
    watches = Watches()
    watched = Watched(7, "alice", "601, 602: drill", rows, confirm_until=2000.0)
    watches.add(watched)
    page = watched.listen()
    # the press comes before the phone's 200 is recorded: the answer does not undo it
    watches.confirmed(Confirmation(7, "601", "snom-xml", "confirmed", 1500.0, 9999.0))
    watches.delivered(7, snom, Delivery(snom.uri, 200, "OK", 5.0))
    assert watched.rows["601"].confirm == "confirmed"
    assert watched.rows["601"].answer == "200 OK"
    lines = [
        report.Line(snom, Delivery(snom.uri, 200, "OK", 5.0), confirm="confirm asked"),
        report.Line(plain, Delivery(plain.uri, 200, "OK", 5.0), confirm="cannot confirm (x)"),
    ]
    watches.finish(7, report.Report(True, lines))
    assert watched.rows["601"].confirm == "confirmed" and watched.settled
    seen = [page.get_nowait() for _ in range(page.qsize())]
    assert seen[-1] == DONE and not watched.listeners
    assert watched.rows["602"].confirm_words == "cannot confirm (format message)"

    asked = {"601": replace(row_of(snom, None), confirm="waiting")}
    later = Watched(8, "alice", "601: drill", asked, confirm_until=2000.0)
    watches.add(later)
    waiting = later.listen()
    watches.finish(8, report.Report(False, lines[:1]))
    assert not later.settled and later.listeners  # still listening for the press
    later.expire(1999.0)
    assert later.rows["601"].confirm == "waiting"
    later.expire(2000.0)
    assert later.rows["601"].confirm == "not confirmed" and later.settled
    seen = [waiting.get_nowait() for _ in range(waiting.qsize())]
    assert seen[-1] == DONE and seen[-2].confirm == "not confirmed"


async def test_a_pages_event_stream_ends_with_not_confirmed_once_the_wait_is_over(tmp_path):
    import time

    import aiohttp

    from deskbot.directory import loader
    from deskbot.relay.relay import Relay
    from deskbot.relay.values import Policy
    from deskbot.senders.recording import RecordingSender
    from deskbot.settings.load import parse
    from deskbot.sources.web.app import WebSource
    from deskbot.sources.web.sessions import COOKIE
    from deskbot.store.audit import AuditLog

    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    raw = {
        "phones": {"601": {"uri": "sip:601@127.0.0.1:9", "format": "snom-xml"}},
        "people": {"alice": {"phone": "601"}},
        "web": {"listen": "127.0.0.1:0", "users": {"alice": hashed}},
    }
    s = parse(raw, Path("x.toml"), {}).settings
    audit = AuditLog(tmp_path / "audit.sqlite3")
    relay = Relay(RecordingSender(), loader.from_settings(s), Policy.from_settings(s), audit)
    assert s.web is not None
    source = WebSource(s.web, relay)
    await source.start()
    snom = relay.directory.phones["601"]
    row = replace(row_of(snom, Delivery(snom.uri, 200, "OK", 3.0)), confirm="waiting")
    watched = Watched(5, "alice", "601: drill", {"601": row}, confirm_until=time.time() + 0.5)
    watched.finished = time.time()
    source.watches.add(watched)
    _, cookie = source.sessions.start("alice")
    events: list[str] = []
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession(cookies={COOKIE: cookie}) as http:
            url = f"http://127.0.0.1:{source.port}/sends/5/events"
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=20)) as resp:
                assert resp.headers["Content-Type"] == "text/event-stream"
                async for line in resp.content:  # until the server ends the stream
                    if line.startswith(b"data: "):
                        events.append(line.decode())
    finally:
        await source.stop()
        audit.close()
    assert '"waiting": 1' in events[1] and '"confirm": "waiting"' in events[0]
    assert '"confirm": "not confirmed"' in events[-2] and '"waiting": 0' in events[-1]
    assert time.monotonic() - started < 10  # ended when nothing more could change


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_two_replicas_consoles_share_the_failed_sign_in_count_and_the_sign_in_rows(store):
    """Behind a load balancer each try may reach another replica: five wrong passwords
    for one name, spread over both, and the right one is refused at either for a while."""
    import aiohttp

    from deskbot.directory import loader
    from deskbot.relay.relay import Relay
    from deskbot.relay.values import Policy
    from deskbot.senders.recording import RecordingSender
    from deskbot.settings.load import parse
    from deskbot.sources.web.app import WebSource

    hashed = bcrypt.hashpw(b"right one", bcrypt.gensalt(4)).decode()
    raw = {
        "phones": {"486": {"uri": "sip:486@127.0.0.1:9"}},
        "people": {"alice": {"phone": "486"}},
        "web": {"listen": "127.0.0.1:0", "users": {"alice": hashed}},
    }
    s = parse(raw, Path("x.toml"), {}).settings
    assert s.web is not None
    consoles = []
    for name in ("a", "b"):
        audit = store(name)
        relay = Relay(RecordingSender(), loader.from_settings(s), Policy.from_settings(s), audit)
        consoles.append(WebSource(s.web, relay, audit.sign_ins()))
        await consoles[-1].start()
    urls = [f"http://127.0.0.1:{c.port}/signin" for c in consoles]
    right = {"name": "alice", "password": "right one"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(urls[1], data=right, allow_redirects=False) as resp:
                assert resp.status == 303  # signed in at b
            for i in range(FAILURES_PER_NAME):  # one at a, one at b, and so on
                wrong = {"name": "alice", "password": f"guess {i}"}
                async with http.post(urls[i % 2], data=wrong) as resp:
                    assert resp.status == 401
            for url in urls:
                async with http.post(url, data=right, allow_redirects=False) as resp:
                    assert resp.status == 429
                    assert "Too many failed sign-ins: try again in" in await resp.text()
    finally:
        for console in consoles:
            await console.stop()
    for console in consoles:  # each replica shows every replica's attempts, newest first
        rows = console.relay.audit.sign_ins().recent(100)
        assert [(n, o) for _, n, _, o in rows] == [
            ("alice", "rate-limited"),
            ("alice", "rate-limited"),
            *[("alice", "wrong-password")] * FAILURES_PER_NAME,
            ("alice", "signed-in"),
        ]
        assert all("guess" not in str(row) and "right" not in str(row) for row in rows)
