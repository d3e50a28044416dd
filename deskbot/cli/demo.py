"""``deskbot demo``: the whole flow on this machine, no accounts needed.

Simulated desk phones (real SIP endpoints on loopback) answer like Snom
phones; the real SIP agent sends to them; a console chat takes the same
commands as Slack or Matrix and prints the same replies. The ``[desk]``
endpoint runs on loopback too, so ``confirm`` works: Reception takes Snom XML
screens, and a simulated person there presses OK a moment after one arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deskbot.directory import loader
from deskbot.relay.relay import Relay
from deskbot.relay.values import ChatUser, Policy
from deskbot.senders.sip.agent import SipAgent
from deskbot.senders.sip.phonesim import SimulatedPhone
from deskbot.service.confirms import ConfirmPoster, poster_for
from deskbot.settings.load import parse
from deskbot.settings.schema import Desk
from deskbot.sources.console import ConsoleSource
from deskbot.sources.desk import DeskSource
from deskbot.sources.schedule import ScheduleSource
from deskbot.store.audit import AuditLog

LINGER = 60.0  # seconds the demo waits, once stdin has ended, for later sends due by then
PHONES = [("486", "Reception", False), ("487", "Warehouse", False), ("488", "Lab", True)]
INFOBOX = ("487",)  # a Snom phone taking Infobox notifications (SIP NOTIFY)
SCREENS = ("486",)  # a Snom phone taking XML screens (snom-xml): it has an OK key
PRESS_AFTER = 3.0  # seconds until the person at a screen phone presses OK
CONFIRM_WITHIN = 15  # seconds: then the thread is told who did not confirm

BANNER = """\
deskbot demo: a console chat and simulated desk phones on 127.0.0.1.
  phones: 486 Reception (Snom XML screen: someone there presses OK 3 s after a text),
          487 Warehouse (Snom Infobox: SIP NOTIFY, a line per line),
          488 Lab (unplugged: never answers),
          489 Old desk (the directory points at a phone without that identity: 404)
  people: alice (486, admin), bob (487), carol (488); groups: @sales, @everyone
Try:  486 meeting moved  |  @sales lunch is here  |  who @everyone  |  probe @everyone
      in 10s 486 tea is ready  |  scheduled  |  cancel 1  |  templates  |  !lunch
      !drill time=15:00  |  confirm @everyone fire drill  |  history  |  help
You are {user}. Type commands, one per line (Ctrl-D to quit).
"""


def _format(extension: str) -> str:
    if extension in SCREENS:
        return "snom-xml"
    return "snom-infobox" if extension in INFOBOX else "message"


def demo_settings(ports: dict[str, int], audit_path: Path, desk_port: int) -> dict[str, Any]:
    phones = {
        ext: {
            "uri": f"sip:{ext}@127.0.0.1:{ports[ext]}",
            "label": label,
            "format": _format(ext),
        }
        for ext, label, _ in PHONES
    }
    phones["489"] = {"uri": f"sip:489@127.0.0.1:{ports['486']}", "label": "Old desk"}
    return {
        "sip": {"listen": "127.0.0.1:0", "from_uri": "sip:deskbot@127.0.0.1", "timeout": 2.0},
        "access": {"senders": "*", "admins": ["alice"]},
        "audit": {"path": str(audit_path)},
        "desk": {"listen": f"127.0.0.1:{desk_port}", "url": f"http://127.0.0.1:{desk_port}"},
        "message": {"confirm_within": CONFIRM_WITHIN},
        "phones": phones,
        "people": {
            "alice": {"phone": "486", "name": "Alice"},
            "bob": {"phone": "487", "name": "Bob"},
            "carol": {"phone": "488", "name": "Carol"},
        },
        "groups": {
            "sales": {"members": ["alice", "bob"]},
            "everyone": {"members": ["486", "487", "488", "489"]},
        },
        "templates": {
            "drill": {"text": "Fire drill at {time}: leave by the stairs", "targets": "@everyone"},
            "lunch": {"text": "Lunch is in the kitchen", "targets": "@sales"},
        },
    }


async def run_demo(as_user: str, out: Any = sys.stdout) -> None:
    """Run until stdin ends; AgentError if the SIP agent cannot start."""

    def show(phone: SimulatedPhone, text: str) -> None:
        out.write(f"📟 {phone.extension} {phone.label} shows: {text}\n")

    phones = [
        await SimulatedPhone(
            ext,
            label,
            unplugged=off,
            infobox=ext in INFOBOX,
            screen=ext in SCREENS,
            presses=PRESS_AFTER if ext in SCREENS else None,
            on_display=show,
        ).start()
        for ext, label, off in PHONES
    ]
    desk = DeskSource(Desk(listen="127.0.0.1:0"), None)  # its port first: the keys' URL
    with tempfile.TemporaryDirectory(prefix="deskbot-demo-") as tmp:
        audit_path = Path(tmp) / "audit.sqlite3"
        agent: SipAgent | None = None
        audit: AuditLog | None = None
        try:
            await desk.start()
            ports = {p.extension: p.port for p in phones}
            settings = parse(demo_settings(ports, audit_path, desk.port), Path("(demo)"), {})
            agent = SipAgent(settings.settings.sip)
            audit = AuditLog(audit_path)
            await agent.start()
            s = settings.settings
            relay = Relay(agent, loader.from_settings(s), Policy.from_settings(s), audit)
            assert s.desk is not None
            desk.desk, desk.confirmer = s.desk, relay.confirmer  # the presses, as in `run`
            console = ConsoleSource(relay, ChatUser("console", as_user), out)
            await _serve(relay, console, poster_for(relay, {"console": console}, None), out)
        finally:
            await desk.stop()
            if agent is not None:
                await agent.close()
            if audit is not None:
                audit.close()
            for phone in phones:
                phone.close()


async def _serve(
    relay: Relay, console: ConsoleSource, poster: ConfirmPoster | None, out: Any
) -> None:
    """The console chat until stdin ends, with the clock and the confirmations' sweep."""
    assert relay.deferred is not None  # the demo has its audit log
    clock = ScheduleSource(relay, relay.deferred, {"console": console})
    out.write(BANNER.format(user=console.user.id))
    out.flush()
    await console.start()
    await clock.start()
    tasks = [asyncio.create_task(clock.run(), name="demo-clock")]
    if poster is not None:
        tasks.append(asyncio.create_task(poster.run(), name="demo-confirms"))
    try:
        await console.run()
        await _linger(relay, clock, out, poster)
    finally:
        await clock.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if poster is not None:
            await poster.close()


async def _linger(
    relay: Relay, clock: ScheduleSource, out: Any, poster: ConfirmPoster | None = None
) -> None:
    """After stdin ends, let later sends due within LINGER go out (a scripted demo), and the
    thread of a confirm be told who did not confirm; woken by the clock each time it served
    one and by the poster each time it told a thread, not by looking at the store."""
    assert relay.deferred is not None
    deadline = time.time() + LINGER
    while time.time() < deadline:
        wakes = [clock.served] + ([poster.told] if poster is not None else [])
        for wake in wakes:
            wake.clear()  # before looking: one served meanwhile wakes the wait
        pending = relay.deferred.pending(None, None, None)
        confirms = poster.store.overdue(deadline) if poster is not None else []
        if not any(d.due <= deadline for d in pending) and not confirms:
            break
        waits = [asyncio.create_task(wake.wait()) for wake in wakes]
        await asyncio.wait(waits, timeout=deadline - time.time(), return_when="FIRST_COMPLETED")
        for wait in waits:
            wait.cancel()
    pending = relay.deferred.pending(None, None, None)
    if pending:
        out.write(f"deskbot demo: {len(pending)} later send(s) not sent: the demo has ended\n")
    if poster is not None and poster.store.overdue(deadline):
        out.write("deskbot demo: a confirm's summary not told: the demo has ended\n")


def main(as_user: str = "alice") -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(as_user))
