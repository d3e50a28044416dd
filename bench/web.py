"""The web console's costs: page weight, time from a phone's answer to the screen, idle CPU.

Run by hand: ``.venv/bin/python bench/web.py --runs 30 --people 50 --idle 30``.
The relay and the web source run in this process on a sender whose phones
answer when the bench says so; Debian's Chromium (Playwright) is the person.

- page weight: the send page (with its Confirm control) and its stylesheet and
  script, as served (bytes).
- answer to screen: the sender returns a phone's answer at ``time.time()``;
  a MutationObserver in the page stamps ``Date.now()`` when that phone's row
  changes. Same machine, same clock; milliseconds.
- confirmation to screen: the same for a confirm send, from the moment the
  phone's key press reaches the ``Confirmer`` to "confirmed" in the row.
- idle: ``--people`` signed-in send pages (each its own browser context and
  session) stay open for ``--idle`` seconds; the CPU this process uses meanwhile
  (the relay, the web source, Playwright's idle client) as a share of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import bcrypt

from deskbot.directory import loader
from deskbot.relay.relay import Relay
from deskbot.relay.values import Policy
from deskbot.senders.base import Delivery
from deskbot.senders.recording import RecordingSender
from deskbot.settings.load import parse
from deskbot.sources.web.app import WebSource
from deskbot.store.audit import AuditLog

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench password"
DESK = "http://127.0.0.1:9"


class GatedSender(RecordingSender):
    """Each phone answers once ``release`` is called; the moment it answers is kept."""

    def __init__(self) -> None:
        super().__init__(timeout=5.0)
        self.gates: list[asyncio.Future[None]] = []
        self.answered_at: list[float] = []

    async def send(self, phone, text, ask=None):  # type: ignore[no-untyped-def]
        gate = asyncio.get_running_loop().create_future()
        self.gates.append(gate)
        await gate
        if ask is not None:
            self.asks[phone.extension] = ask
        self.answered_at.append(time.time())
        return Delivery(phone.uri, 200, "OK", 1.0)

    def release(self) -> None:
        for gate in self.gates:
            if not gate.done():
                gate.set_result(None)


def settings(people: int, hashed: str):  # type: ignore[no-untyped-def]
    raw = {
        "phones": {
            "486": {"uri": "sip:486@127.0.0.1:9", "label": "Reception", "format": "snom-xml"}
        },
        "people": {f"p{i}": {"phone": "486"} for i in range(people)},
        "limits": {"per_sender_per_minute": 10_000, "per_phone_per_minute": 10_000},
        "web": {"listen": "127.0.0.1:0", "users": {f"p{i}": hashed for i in range(people)}},
        "desk": {"listen": "127.0.0.1:0", "url": DESK},  # confirm keys (pressed in-process)
    }
    return parse(raw, Path("bench.toml"), {}).settings


async def sign_in(context, url: str, name: str):  # type: ignore[no-untyped-def]
    page = await context.new_page()
    await page.goto(f"{url}/")
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_label("Targets").wait_for()
    return page


WATCH = """([column, wanted]) => new Promise((resolve) => {
  const cell = [...document.querySelectorAll('tr[data-extension="486"] td')][column];
  if (cell.textContent.includes(wanted)) { resolve(0); return; }
  new MutationObserver(() => {
    if (cell.textContent.includes(wanted)) resolve(Date.now());
  }).observe(cell, {childList: true, characterData: true, subtree: true});
  window.__watching = true;
})"""


def report(what: str, delays: list[float]) -> None:
    if not delays:
        return
    delays.sort()
    p95 = delays[int(0.95 * (len(delays) - 1))]
    print(
        f"{what} over {len(delays)} runs: median "
        f"{statistics.median(delays):.1f} ms, p95 {p95:.1f} ms, max {delays[-1]:.1f} ms"
    )


async def main(runs: int, people: int, idle: float) -> None:
    from playwright.async_api import async_playwright

    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    s = settings(max(people, 1), hashed)
    sender = GatedSender()
    with tempfile.TemporaryDirectory() as tmp:
        audit = AuditLog(Path(tmp) / "audit.sqlite3")
        relay = Relay(sender, loader.from_settings(s), Policy.from_settings(s), audit)
        assert s.web is not None
        source = WebSource(s.web, relay)
        await source.start()
        url = f"http://127.0.0.1:{source.port}"
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = await browser.new_context()
            page = await sign_in(context, url, "p0")
            weight = {}
            for path in ("/", "/static/style.css", "/static/app.js"):
                weight[path] = len(await (await page.request.get(f"{url}{path}")).body())
            print("page weight (bytes):", weight, "total", sum(weight.values()))

            delays = []
            for _ in range(runs):
                await page.goto(f"{url}/")
                await page.get_by_label("Targets").fill("486")
                await page.get_by_label("Message").fill("bench")
                await page.get_by_role("button", name="Send").click()
                await page.locator("tr[data-extension='486']").wait_for()
                shown = asyncio.ensure_future(page.evaluate(WATCH, [2, "200"]))
                await page.wait_for_function("window.__watching === true")
                await asyncio.sleep(0.2)  # the event stream is open and quiet
                sender.release()
                stamp = await shown
                if stamp:
                    delays.append(stamp - sender.answered_at[-1] * 1000)
            report("answer to screen", delays)

            delays = []
            assert relay.confirmer is not None
            for _ in range(runs):
                await page.goto(f"{url}/")
                await page.get_by_label("Targets").fill("486")
                await page.get_by_label("Message").fill("bench")
                await page.get_by_label("Confirm", exact=True).check()
                await page.get_by_role("button", name="Send").click()
                await page.locator("tr[data-extension='486']").wait_for()
                await asyncio.sleep(0.1)
                sender.release()
                await page.get_by_text("waiting for 1 confirmation").wait_for()
                shown = asyncio.ensure_future(page.evaluate(WATCH, [5, "confirmed"]))
                await page.wait_for_function("window.__watching === true")
                await asyncio.sleep(0.2)
                pressed = time.time()
                relay.confirmer.press(sender.asks["486"].url.removeprefix(DESK), "127.0.0.1")
                stamp = await shown
                if stamp:
                    delays.append(stamp - pressed * 1000)
            report("confirmation to screen", delays)

            pages = [page]
            for i in range(1, people):
                pages.append(await sign_in(await browser.new_context(), url, f"p{i}"))
            for each in pages:
                await each.goto(f"{url}/")
            await asyncio.sleep(2)
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.sleep(idle)
            used = (time.process_time() - cpu) / (time.perf_counter() - wall)
            print(f"{len(pages)} send pages open for {idle:.0f} s: {100 * used:.3f} % of a core")
            await browser.close()
        await source.stop()
        audit.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--idle", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.people, args.idle))
