"""The web console's pieces without a browser: sessions, hashes, the [web] settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt
from test_config import BASE, problems

from deskbot.sources.web import passwords
from deskbot.sources.web.sessions import FAILURES_PER_NAME, Sessions, SignInGuard

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
