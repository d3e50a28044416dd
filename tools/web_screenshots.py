"""The README's screenshots of the web console: the send page light and dark, the answers
of a confirm send (one phone confirmed), and Phones.

Run by hand: ``.venv/bin/python tools/web_screenshots.py`` (writes docs/web-*.png).
The relay and the web source run here on a recording sender: 486 (a Snom with an
OK key) answers 200 and presses its key, 487 answers 404 and 488 gives no answer,
as the browser tests' SIPp phones do.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import bcrypt

from deskbot.directory import loader
from deskbot.relay.relay import Relay
from deskbot.relay.values import Policy
from deskbot.senders.base import Cause, Delivery
from deskbot.senders.recording import RecordingSender
from deskbot.settings.load import parse
from deskbot.sources.web.app import WebSource
from deskbot.store.audit import AuditLog

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "screenshot"


def no_answer(phone, text):  # type: ignore[no-untyped-def]
    return Delivery(phone.uri, 408, "Request Timeout", 6000.0, Cause.TIMEOUT)


async def main() -> None:
    from playwright.async_api import async_playwright

    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    raw = {
        "phones": {
            "486": {"uri": "sip:486@10.0.0.86", "label": "Reception", "format": "snom-xml"},
            "487": {"uri": "sip:487@10.0.0.87", "label": "Store room"},
            "488": {"uri": "sip:488@10.0.0.88", "label": "Lab", "format": "snom-infobox"},
        },
        "people": {"alice": {"phone": "486", "name": "Alice"}},
        "groups": {"desk": {"members": ["486", "487", "488"]}},
        "access": {"admins": ["alice"]},
        "templates": {"drill": {"text": "Fire drill at {time}: leave by the stairs"}},
        "web": {"listen": "127.0.0.1:0", "users": {"alice": hashed}},
        "desk": {"listen": "127.0.0.1:0", "url": "http://10.0.0.1:9122"},  # confirm keys
    }
    s = parse(raw, Path("screens.toml"), {}).settings
    sender = RecordingSender(answers={"487": 404, "488": no_answer})
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog(Path(tmp) / "audit.sqlite3")
        relay = Relay(sender, loader.from_settings(s), Policy.from_settings(s), audit)
        assert s.web is not None
        source = WebSource(s.web, relay)
        await source.start()
        await relay.probe_all()
        url = f"http://127.0.0.1:{source.port}"
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox"]
            )
            for scheme in ("light", "dark"):
                context = await browser.new_context(
                    color_scheme=scheme, viewport={"width": 900, "height": 620}
                )
                page = await context.new_page()
                await page.goto(f"{url}/")
                await page.get_by_label("Name").fill("alice")
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Sign in").click()
                await page.get_by_label("Targets").fill("@desk")
                await page.get_by_label("Message").fill("Lunch is in the kitchen")
                await page.get_by_label("Confirm", exact=True).check()
                await page.locator("#preview").get_by_text("3 phone(s)").wait_for()
                await page.screenshot(
                    path=str(ROOT / f"docs/web-send-{scheme}.png"), full_page=True
                )
                await page.get_by_role("button", name="Send").click()
                await page.get_by_text("1/3 delivered").wait_for()
                key = sender.asks["486"].url  # the Snom presses its OK key
                assert relay.confirmer is not None
                relay.confirmer.press(key.removeprefix("http://10.0.0.1:9122"), "10.0.0.86")
                await page.get_by_text("confirmed at").wait_for()
                await page.screenshot(path=str(ROOT / f"docs/web-answers-{scheme}.png"))
                if scheme == "light":
                    await page.get_by_role("link", name="Phones").click()
                    await page.screenshot(path=str(ROOT / "docs/web-phones.png"))
                await context.close()
            await browser.close()
        await source.stop()
        audit.close()


if __name__ == "__main__":
    asyncio.run(main())
