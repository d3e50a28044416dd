"""Signing in to the web console with the directory password (`[web] ldap = true`): a real
slapd, `deskbot run` syncing its people from it, Debian's Chromium at the sign-in page.

deskbot searches for the person with its own account, then binds as the entry found
with the password typed; the person's rights are their chat rights as ever.
"""

from __future__ import annotations

import re
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from conftest import DeskbotRun, wait_for, write_config
from playwright.sync_api import Page, expect
from slapd_server import BIND_DN, BIND_PASSWORD, Slapd, start_slapd
from test_web import sign_in

ERIN = "erin's directory pass"
FRANK = "frank (only in LDAP)"
CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = 2.0
[health]
listen = "127.0.0.1:0"
[audit]
path = "{tmp}/audit.sqlite3"
[access]
senders = ["alice", "erin"]
admins = ["alice"]
[web]
listen = "127.0.0.1:0"
ldap = true
[web.users]
alice = "{alice}"
[phones.100]
uri = "sip:100@127.0.0.1:9"
label = "Operator"
[people.alice]
phone = "100"
[directory.ldap]
url = "{url}"
bind_dn = "{bind_dn}"
password_env = "DESKBOT_LDAP_PASSWORD"
base = "{base}"
phone_uri = "sip:{{extension}}@127.0.0.1:9"
refresh = 300
"""


def entry(ou: str, uid: str, cn: str, phone: str, password: str) -> str:
    return (
        f"dn: uid={uid},{ou}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\nsn: {cn}\n"
        f"telephoneNumber: {phone}\nuserPassword: {password}\n"
    )


@dataclass
class Console:
    url: str
    deskbot: DeskbotRun
    slapd: Slapd
    audit: Path

    def sign_ins(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.audit) as db:
            return db.execute("SELECT name, outcome FROM sign_ins ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("web-ldap")
    slapd = start_slapd(Path(tempfile.mkdtemp(prefix="slapd-", dir=tmp)))  # stopped in a test
    ou = slapd.subtree()
    slapd.add(
        "\n".join(
            [
                entry(ou, "erin", "Erin Ellis", "486", ERIN),
                entry(ou, "frank", "Frank Fox", "487", FRANK),
                entry(ou, "gina", "Gina Gray", "488", ""),  # no password: no sign-in
            ]
        ).replace("userPassword: \n", "")
    )
    body = CONFIG.format(
        tmp=tmp,
        alice=bcrypt.hashpw(b"alice's own", bcrypt.gensalt(4)).decode(),
        url=slapd.url,
        bind_dn=BIND_DN,
        base=ou,
    )
    path = write_config(tmp / "deskbot.toml", body)
    deskbot = DeskbotRun(path, {"DESKBOT_LDAP_PASSWORD": BIND_PASSWORD}, tmp / "run.log")
    deskbot.start()
    port = re.findall(r"web console on http://127\.0\.0\.1:(\d+)/", deskbot.log())[-1]
    yield Console(f"http://127.0.0.1:{port}", deskbot, slapd, tmp / "audit.sqlite3")
    deskbot.stop()
    slapd.stop()


@pytest.fixture
def page(chromium: Any, console: Console) -> Iterator[Page]:
    context = chromium.new_context(base_url=console.url)
    yield context.new_page()
    context.close()


def test_a_person_of_the_directory_signs_in_with_their_directory_password(page, console):
    sign_in(page, "erin", ERIN)
    expect(page.get_by_label("Targets")).to_be_visible()
    expect(page.locator(".who")).to_have_text("erin")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "Frank", FRANK)  # as typed; the directory's name is frank
    expect(page.get_by_label("Targets")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "alice", "alice's own")  # [web.users] still signs in by its hash
    expect(page.get_by_label("Targets")).to_be_visible()
    assert console.sign_ins()[-1] == ("alice", "signed-in")
    assert ("erin", "signed-in") in console.sign_ins()


def test_wrong_unknown_empty_and_hostile_sign_ins_get_the_same_words(page, console):
    for name, password in (
        ("erin", "not her password"),
        ("nobody", "anything"),
        ("gina", "anything"),  # in the directory without a password
        ("alice", ERIN),  # a [web.users] name is checked against its hash only
        ("*", ERIN),
        ("erin)(uid=*", ERIN),
        ("uid=erin", ERIN),
    ):
        sign_in(page, name, password)
        expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")
        assert page.get_by_label("Targets").count() == 0, (name, password)
    # an empty simple bind is anonymous in LDAP: refused before asking (the page's form
    # would not send it; a script would)
    empty = page.request.post("/signin", form={"name": "erin", "password": ""})
    assert empty.status == 401 and "Wrong name or password." in empty.text()
    outcomes = console.sign_ins()
    assert ("nobody", "wrong-password") in outcomes and ("erin", "wrong-password") in outcomes
    assert "signed-in" not in [o for n, o in outcomes if n in ("gina", "*", "erin)(uid=*")]


def test_directory_sign_ins_are_rate_limited_like_the_others(page, console):
    for _ in range(5):
        sign_in(page, "frank", "guess")
        expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")
    sign_in(page, "frank", FRANK)
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins: try again in")
    assert console.sign_ins()[-1] == ("frank", "rate-limited")


def test_the_directory_away_is_said_and_no_password_is_ever_written(page, console):
    console.slapd.stop()
    try:
        sign_in(page, "erin", ERIN)
        expect(page.get_by_role("alert")).to_contain_text(
            "Signing in with the directory password is not possible right now"
        )
        sign_in(page, "nobody", "anything")  # the same for a name that is nobody's
        expect(page.get_by_role("alert")).to_contain_text("not possible right now")
        assert console.sign_ins()[-1] == ("nobody", "directory-unavailable")
    finally:
        console.slapd.start()
    sign_in(page, "erin", ERIN)
    expect(page.get_by_label("Targets")).to_be_visible()
    wait_for(lambda: "signed in" in console.deskbot.log(), what="the sign-in logged")
    written = console.deskbot.log() + console.audit.read_bytes().decode(errors="replace")
    for secret in (ERIN, FRANK, BIND_PASSWORD):
        assert secret not in written
