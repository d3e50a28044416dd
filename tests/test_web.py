"""The web console in a real browser (Debian's Chromium through Playwright), against the
installed `deskbot run`, SIPp phones and the audit log: what a person at a desk sees.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from conftest import (
    SIPP_DIR,
    DeskbotRun,
    SippPhone,
    free_port,
    sipp_answering,
    wait_for,
    write_config,
)
from playwright.sync_api import Page, expect

PASSWORDS = {"alice": "correct horse battery", "bob": "bob's own pass", "carol": "carol pw 123"}
CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = 2.0
[health]
listen = "127.0.0.1:0"
[audit]
path = "{tmp}/audit.sqlite3"
[limits]
per_sender_per_minute = 100
per_phone_per_minute = 100
[access]
senders = ["alice", "bob", "dave"]
admins = ["alice"]
[desk]
listen = "127.0.0.1:{desk}"
url = "http://127.0.0.1:{desk}"
[web]
listen = "127.0.0.1:0"
[web.users]
alice = "{alice}"
bob = "{bob}"
carol = "{carol}"
dave = "{dave}"
[phones.486]
uri = "{ok}"
label = "Reception"
[phones.487]
uri = "{missing}"
label = "Store <room>"
[phones.488]
uri = "{silent}"
label = "Lab"
[phones.489]
uri = "{prober}"
label = "Answers OPTIONS"
[phones.490]
uri = "{snom}"
label = "Front desk"
format = "snom-xml"
[people.alice]
phone = "486"
name = "Alice"
[people.bob]
phone = "487"
[people.carol]
phone = "488"
[people.dave]
phone = "486"
[groups.desk]
members = ["486", "487", "488"]
[templates.drill]
text = "Fire drill at {{time}}: leave by the stairs"
targets = "486"
"""


def hash_password(password: str) -> str:
    """`deskbot hash-password`, as an admin runs it: the password on stdin."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "deskbot"), "hash-password"],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Console:
    url: str
    deskbot: DeskbotRun
    ok: SippPhone
    audit: Path
    snom: SippPhone  # a Snom phone: its screen carries the confirm key

    def sign_ins(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.audit) as db:
            return db.execute("SELECT name, outcome FROM sign_ins ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("web")
    ok, missing = sipp_answering(tmp, 200), sipp_answering(tmp, 404)
    silent = SippPhone(SIPP_DIR / "silent.xml", tmp)
    prober = sipp_answering(tmp, 200, "OPTIONS")
    snom = sipp_answering(tmp, 200, "NOTIFY")
    fast = {n: bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode() for n, p in PASSWORDS.items()}
    body = CONFIG.format(
        tmp=tmp,
        alice=hash_password(PASSWORDS["alice"]),
        bob=fast["bob"],
        carol=fast["carol"],
        dave=bcrypt.hashpw(b"dave's pass", bcrypt.gensalt(4)).decode(),
        ok=ok.uri("486"),
        missing=missing.uri("487"),
        silent=silent.uri("488"),
        prober=prober.uri("489"),
        snom=snom.uri("490"),
        desk=free_port(socket.SOCK_STREAM),
    )
    path = write_config(tmp / "deskbot.toml", body)
    deskbot = DeskbotRun(path, {}, tmp / "run.log").start()
    port = re.findall(r"web console on http://127\.0\.0\.1:(\d+)/", deskbot.log())[-1]
    yield Console(f"http://127.0.0.1:{port}", deskbot, ok, tmp / "audit.sqlite3", snom)
    deskbot.stop()
    for phone in (ok, missing, silent, prober, snom):
        phone.stop()


@pytest.fixture
def page(chromium: Any, console: Console) -> Iterator[Page]:
    context = chromium.new_context(base_url=console.url)
    page = context.new_page()
    yield page
    context.close()


def sign_in(page: Page, name: str, password: str | None = None) -> None:
    page.goto("/")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password if password is not None else PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()


def send(page: Page, targets: str, message: str) -> None:
    page.get_by_label("Targets").fill(targets)
    page.get_by_label("Message").fill(message)
    page.get_by_role("button", name="Send").click()


def test_a_wrong_password_and_an_unknown_name_get_the_same_words_and_are_audited(page, console):
    sign_in(page, "alice", "not her password")
    wrong = page.get_by_role("alert")
    expect(wrong).to_have_text("Wrong name or password.")
    sign_in(page, "mallory", "anything")
    expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")
    assert page.get_by_label("Targets").count() == 0  # still not signed in
    sign_in(page, "alice")
    expect(page.get_by_label("Targets")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    seen = console.sign_ins()
    assert ("alice", "wrong-password") in seen
    assert ("mallory", "wrong-password") in seen
    assert seen[-1] == ("alice", "signed-in")
    assert PASSWORDS["alice"] not in console.audit.read_bytes().decode(errors="replace")


def test_failed_sign_ins_are_limited_per_name_even_with_the_right_password_then(page, console):
    for _ in range(5):
        sign_in(page, "dave", "guess")
        expect(page.get_by_role("alert")).to_have_text("Wrong name or password.")
    sign_in(page, "dave", "dave's pass")
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-ins: try again in")
    assert console.sign_ins()[-1] == ("dave", "rate-limited")


def test_a_group_send_fills_in_one_row_per_phone_as_each_answers(page, console):
    sign_in(page, "alice")
    send(page, "@desk", "lunch is here")
    rows = page.get_by_role("row")
    silent = rows.filter(has_text="488")
    # the silent phone is still waiting while the others have answered: rows fill in live
    expect(rows.filter(has_text="486")).to_contain_text("200 OK")
    expect(rows.filter(has_text="487")).to_contain_text("404 Not Found")
    expect(rows.filter(has_text="487")).to_contain_text("has no identity 487")  # the hint
    expect(silent).to_contain_text("waiting for the phone")
    expect(silent).to_contain_text("408", timeout=10_000)
    expect(silent).to_contain_text("no answer: the phone is off")
    expect(page.get_by_role("status")).to_have_text("1/3 delivered")
    got = console.ok.wait_received()
    assert got[-1].body.decode() == "Alice: lunch is here"


def test_refusals_are_shown_in_the_chat_words(page, console):
    sign_in(page, "carol")  # a web user, but not among [access] senders
    send(page, "486", "hello")
    expect(page.get_by_role("alert")).to_have_text(
        "you are not allowed to send to desk phones: ask an admin to add you to [people] "
        "with your Web id carol, and to [access] senders"
    )
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "bob")
    send(page, "486", "x" * 161)
    expect(page.get_by_role("alert")).to_have_text(
        "text too long: 161 characters, the limit is 160. Shorten it; nothing was sent."
    )
    expect(page.get_by_label("Message")).to_have_value("x" * 161)  # kept to shorten it
    expect(page.locator("#count")).to_have_text("161/160 characters: 1 too many")
    send(page, "nosuch", "hello")
    expect(page.get_by_role("alert")).to_have_text(
        "unknown target 'nosuch': not an extension, person or group; try `who` or `help`. "
        "Nothing was sent."
    )


def test_the_preview_names_the_phones_before_sending(page, console):
    sign_in(page, "bob")
    page.get_by_label("Targets").fill("@desk")
    expect(page.locator("#preview")).to_contain_text("@desk → 3 phone(s):")
    expect(page.locator("#preview")).to_contain_text("487 (Store <room>)")
    assert "127.0.0.1" not in page.locator("#preview").inner_text()  # no addresses for bob


def test_typed_html_shows_as_text_and_runs_nothing(page, console):
    sign_in(page, "alice")
    typed = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    page.get_by_label("Targets").fill("<script>alert(1)</script>")
    expect(page.locator("#preview")).to_contain_text("unknown target '<script>alert(1)</script>'")
    send(page, "486", typed)
    expect(page.get_by_role("row").filter(has_text="486")).to_contain_text("200 OK")
    expect(page.locator(".title")).to_have_text(f"486 (Reception): {typed}")
    assert page.locator(".title b").count() == 0 and page.locator(".title img").count() == 0
    assert page.evaluate("window.pwned") is None
    expect(page.get_by_role("row").filter(has_text="487")).to_have_count(0)
    page.goto("/phones")
    expect(page.get_by_role("row").filter(has_text="487")).to_contain_text("Store <room>")


def test_a_post_from_another_sites_page_is_refused_even_with_the_cookie(page, console):
    sign_in(page, "alice")
    expect(page.get_by_label("Targets")).to_be_visible()
    before = len(console.ok.received())
    # a page on another port of the same host: same site, so the browser sends the cookie
    evil = "http://127.0.0.1:9/evil.html"
    form = (
        f'<form method="post" action="{console.url}/send">'
        '<input name="targets" value="486"><input name="message" value="evil">'
        '<input name="csrf" value="guessed"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    page.route(evil, lambda route: route.fulfill(body=form, content_type="text/html"))
    page.goto(evil)
    expect(page.get_by_role("alert")).to_contain_text("(CSRF check), so nothing was done")
    # the cookie without the page's token: refused too
    answer = page.request.post("/send", form={"targets": "486", "message": "evil"})
    assert answer.status == 403
    # the page's token, but the browser says the request came from another origin
    page.goto("/")
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    other = {"Origin": "http://127.0.0.1:9", "Sec-Fetch-Site": "same-site"}
    form = {"targets": "486", "message": "evil", "csrf": token or ""}
    assert page.request.post("/send", form=form, headers=other).status == 403
    send(page, "486", "still works")
    expect(page.get_by_role("row").filter(has_text="486")).to_contain_text("200 OK")
    bodies = [m.body for m in console.ok.received()[before:]]
    assert bodies == [b"Alice: still works"]


def test_history_lists_ones_own_sends_and_admins_see_everyones(page, console):
    sign_in(page, "bob")
    send(page, "486", "from bob")
    expect(page.get_by_role("row").filter(has_text="486")).to_contain_text("200 OK")
    page.get_by_role("link", name="History").click()
    mine = page.get_by_role("row").filter(has_text="486")
    expect(mine.first).to_contain_text("1/1")
    expect(mine.first).to_contain_text("200 OK")
    expect(page.get_by_role("row").filter(has_text="@desk")).to_have_count(0)  # alice's
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "alice")
    page.get_by_role("link", name="History").click()
    expect(page.get_by_role("row").filter(has_text="bob").first).to_contain_text("486")
    expect(page.get_by_role("row").filter(has_text="@desk").first).to_contain_text("1/3")


def test_a_later_send_is_listed_and_can_be_cancelled(page, console):
    sign_in(page, "bob")
    page.get_by_label("Later").fill("in 2h")
    send(page, "486", "much later")
    planned = page.locator("#answer")
    expect(planned).to_contain_text(re.compile(r"will send (tomorrow )?at"))  # late in the day
    found = re.search(r"id (\d+)", planned.inner_text())
    assert found, planned.inner_text()
    page.get_by_role("link", name="Scheduled").click()
    row = page.get_by_role("row").filter(has_text="much later")
    expect(row).to_contain_text("486")
    row.get_by_role("button", name=f"Cancel send {found.group(1)}").click()
    expect(page.locator(".notice")).to_contain_text(f"cancelled send {found.group(1)}")
    expect(page.get_by_role("row").filter(has_text="much later")).to_have_count(0)


def test_sign_out_ends_the_session_on_the_server(page, console):
    sign_in(page, "bob")
    expect(page.get_by_label("Targets")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "deskbot_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.context.add_cookies([cookie])  # the old cookie, kept by someone
    page.goto("/history")
    expect(page).to_have_url(f"{console.url}/signin")


def test_every_answer_has_a_csp_without_inline_script_and_assets_come_from_deskbot(page, console):
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(console.url) else outside.append(r.url))
    sign_in(page, "bob")
    expect(page.get_by_label("Targets")).to_be_visible()
    for path in ("/", "/static/app.js", "/signin", "/nothing-here"):
        headers = page.request.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
    assert outside == []
    wait_for(lambda: console.deskbot.alive(), what="deskbot still running")


def test_a_template_send_fills_in_the_values_and_goes_to_its_own_targets(page, console):
    sign_in(page, "alice")
    page.get_by_label("Template", exact=True).select_option("drill")
    page.get_by_label("Template values").fill("time=14:00")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("row").filter(has_text="486")).to_contain_text("200 OK")
    got = console.ok.wait_received()
    assert got[-1].body.decode() == "Alice: Fire drill at 14:00: leave by the stairs"


def test_a_send_page_is_its_senders_and_the_admins(page, console):
    sign_in(page, "bob")
    send(page, "486", "bob's own")
    expect(page.get_by_role("row").filter(has_text="486")).to_contain_text("200 OK")
    mine = page.url
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "carol")
    assert page.goto(mine).status == 404
    page.goto("/")
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "alice")  # an admin
    page.goto(mine)
    expect(page.get_by_role("row").filter(has_text="486")).to_contain_text("200 OK")


def test_admins_probe_from_the_phones_page_and_others_are_told_why_not(page, console):
    sign_in(page, "alice")
    page.get_by_role("link", name="Phones").click()
    page.get_by_label("Probe targets").fill("489")
    page.get_by_role("button", name="Probe", exact=True).click()
    answers = page.locator("#probe-answers")
    expect(answers.get_by_role("row").filter(has_text="489")).to_contain_text("200 OK")
    expect(answers).to_contain_text("1/1 phones answer")
    token = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "bob")
    page.goto("/phones")
    expect(page.get_by_label("Probe targets")).to_have_count(0)
    token = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    answer = page.request.post("/phones/probe", form={"targets": "489", "csrf": token})
    assert answer.status == 422
    assert "only admins may probe phones" in answer.text()


def test_hostile_forms_are_refused_in_words_and_deskbot_keeps_sending(page, console):
    sign_in(page, "bob")
    token = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    before = len(console.ok.received())

    def post(path: str, **form: str) -> Any:
        return page.request.post(path, form={"csrf": token, **form}, max_redirects=0)

    spaced = post("/send", targets="486\r\nX-Evil: 1", message="hi")
    assert spaced.status == 422 and "Targets are one word without spaces" in spaced.text()
    later = post("/send", targets="486", message="hi", later="in 5m 487 owned")
    assert later.status == 422 and "Later: write `in 20s`" in later.text()
    assert post("/send", targets="486", message="hi", template="../../x").status == 422
    huge = post("/send", targets="486", message="x" * 200_000)
    assert huge.status == 413
    assert page.request.get("/sends/999999999999").status == 404
    assert page.request.get("/sends/999999999999/events").status == 404
    assert page.request.get("/sends/-1").status == 404
    assert page.request.get("/preview?targets=" + "a," * 1500).ok
    assert post("/scheduled/99999/cancel").status == 303  # answered in words on the page
    forged = page.context.request.get(
        "/", headers={"Cookie": "deskbot_session=" + "x" * 10_000}, max_redirects=0
    )
    assert forged.status in (303, 400, 431)
    assert console.ok.received()[before:] == []
    page.goto("/")
    send(page, "486", "after all that")
    expect(page.get_by_role("row").filter(has_text="486")).to_contain_text("200 OK")


def test_history_can_be_searched_and_sorted(page, console):
    sign_in(page, "alice")
    page.get_by_role("link", name="History").click()
    table = page.locator("#history-table")
    rows = table.locator("tbody tr")
    expect(rows.first).to_be_visible()
    page.get_by_label("Search").fill("@desk")
    expect(table.locator("tbody tr:visible")).to_have_count(1)
    page.get_by_label("Search").fill("")
    table.get_by_role("button", name="When").click()  # oldest first
    expect(table.get_by_role("columnheader", name="When")).to_have_attribute(
        "aria-sort", "ascending"
    )
    first = rows.first.locator("td").first.get_attribute("data-sort") or "0"
    last = rows.last.locator("td").first.get_attribute("data-sort") or "0"
    assert float(first) <= float(last)


def test_signing_in_and_sending_work_with_the_keyboard_alone(page, console):
    page.goto("/")
    expect(page.get_by_label("Name")).to_be_focused()
    page.keyboard.type("bob")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORDS["bob"])
    page.keyboard.press("Enter")
    targets = page.get_by_label("Targets")
    expect(targets).to_be_visible()
    targets.focus()
    page.keyboard.type("486")
    page.keyboard.press("Escape")  # closes the suggestions, as a person would
    page.keyboard.press("Tab")
    expect(page.get_by_label("Message")).to_be_focused()
    page.keyboard.type("typed, not clicked")
    for _ in range(10):  # through the template, its values and Later to the button
        if page.evaluate("document.activeElement.textContent") == "Send":
            break
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("row").filter(has_text="486")).to_contain_text("200 OK")


def test_times_are_shown_in_the_browsers_zone(chromium, console):
    context = chromium.new_context(base_url=console.url, timezone_id="Pacific/Kiritimati")
    page = context.new_page()
    try:
        sign_in(page, "bob")
        page.get_by_role("link", name="History").click()
        shown = page.locator("#history-table time").first
        expect(shown).not_to_contain_text("UTC")
        stamp = shown.get_attribute("datetime") or ""
        # UTC+14: the browser's clock, not the server's, names the hour
        local = page.evaluate(
            "(s) => new Date(s).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'})",
            stamp,
        )
        expect(shown).to_contain_text(local)
    finally:
        context.close()


def test_the_pages_fit_a_phone_sized_screen(chromium, console):
    context = chromium.new_context(base_url=console.url, viewport={"width": 360, "height": 740})
    page = context.new_page()
    try:
        sign_in(page, "alice")
        for path in ("/", "/history", "/scheduled", "/phones"):
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"{path} is {width} px wide on a 360 px screen"
        expect(page.get_by_role("link", name="History")).to_be_visible()
    finally:
        context.close()


def test_a_confirmation_appears_live_when_the_phone_presses_its_key(page, console):
    sign_in(page, "alice")
    page.get_by_label("Confirm", exact=True).check()
    send(page, "490,486", "evacuation drill at 15:00")
    snom, plain = (page.get_by_role("row").filter(has_text=e) for e in ("490", "486"))
    expect(snom).to_contain_text("200 OK")
    expect(snom.get_by_role("cell").last).to_have_text("waiting")
    expect(plain).to_contain_text("cannot confirm (format message)")
    summary = page.get_by_role("status")
    expect(summary).to_have_text("2/2 delivered; waiting for 1 confirmation(s)")
    page.reload()  # a page opened after the phones answered still listens for the press
    expect(summary).to_have_text("2/2 delivered; waiting for 1 confirmation(s)")
    page.evaluate("window.notReloaded = true")
    # the phone's OK key: the URL on its screen, fetched as the phone fetches it
    screen = ET.fromstring(console.snom.wait_received(1)[-1].body)
    url = screen.findtext("SoftKeyItem/URL") or ""
    assert url.startswith("http://127.0.0.1:") and "/c/" in url, url
    with urllib.request.urlopen(url, timeout=5) as pressed:
        assert pressed.status == 200
    confirmed = snom.get_by_role("cell").last
    expect(confirmed).to_contain_text("confirmed at")
    stamp = confirmed.locator("time").get_attribute("datetime") or ""
    local = page.evaluate(
        "(s) => new Date(s).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'})", stamp
    )
    expect(confirmed).to_have_text(f"confirmed at {local}")  # in the browser's zone
    expect(summary).to_have_text("2/2 delivered")
    assert page.evaluate("window.notReloaded") is True  # it came live, on the same page
    page.get_by_role("link", name="History").click()
    sent = page.get_by_role("row").filter(has_text="490,486").first
    expect(sent).to_contain_text("490 confirmed at")
    expect(sent).to_contain_text("486 cannot confirm (format message)")
