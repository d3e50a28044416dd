"""``deskbot demo``: the whole flow on this machine, no accounts needed.

Simulated desk phones (real SIP endpoints on loopback) answer like Snom
phones; the real SIP agent sends to them; a console chat takes the same
commands as Slack or Matrix and prints the same replies.
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
from deskbot.settings.load import parse
from deskbot.sources.console import ConsoleSource
from deskbot.sources.schedule import ScheduleSource
from deskbot.store.audit import AuditLog

LINGER = 60.0  # seconds the demo waits, once stdin has ended, for later sends due by then
PHONES = [("486", "Reception", False), ("487", "Warehouse", False), ("488", "Lab", True)]
INFOBOX = ("487",)  # a Snom phone taking Infobox notifications (SIP NOTIFY)

BANNER = """\
deskbot demo: a console chat and simulated desk phones on 127.0.0.1.
  phones: 486 Reception, 487 Warehouse (Snom Infobox: SIP NOTIFY, a line per line),
          488 Lab (unplugged: never answers),
          489 Old desk (the directory points at a phone without that identity: 404)
  people: alice (486, admin), bob (487), carol (488); groups: @sales, @everyone
Try:  486 meeting moved  |  @sales lunch is here  |  who @everyone  |  probe @everyone
      in 10s 486 tea is ready  |  scheduled  |  cancel 1  |  templates  |  !lunch
      !drill time=15:00  |  history  |  help
You are {user}. Type commands, one per line (Ctrl-D to quit).
"""


def demo_settings(ports: dict[str, int], audit_path: Path) -> dict[str, Any]:
    phones = {
        ext: {
            "uri": f"sip:{ext}@127.0.0.1:{ports[ext]}",
            "label": label,
            "format": "snom-infobox" if ext in INFOBOX else "message",
        }
        for ext, label, _ in PHONES
    }
    phones["489"] = {"uri": f"sip:489@127.0.0.1:{ports['486']}", "label": "Old desk"}
    return {
        "sip": {"listen": "127.0.0.1:0", "from_uri": "sip:deskbot@127.0.0.1", "timeout": 2.0},
        "access": {"senders": "*", "admins": ["alice"]},
        "audit": {"path": str(audit_path)},
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
            ext, label, unplugged=off, infobox=ext in INFOBOX, on_display=show
        ).start()
        for ext, label, off in PHONES
    ]
    with tempfile.TemporaryDirectory(prefix="deskbot-demo-") as tmp:
        raw = demo_settings({p.extension: p.port for p in phones}, Path(tmp) / "audit.sqlite3")
        settings = parse(raw, Path("(demo)"), {}).settings
        agent = SipAgent(settings.sip)
        audit = AuditLog(Path(tmp) / "audit.sqlite3")
        try:
            await agent.start()
            relay = Relay(
                agent, loader.from_settings(settings), Policy.from_settings(settings), audit
            )
            console = ConsoleSource(relay, ChatUser("console", as_user), out)
            assert relay.deferred is not None  # the demo has its audit log
            clock = ScheduleSource(relay, relay.deferred, {"console": console})
            out.write(BANNER.format(user=as_user))
            out.flush()
            await console.start()
            await clock.start()
            ticking = asyncio.create_task(clock.run(), name="demo-clock")
            try:
                await console.run()
                await _linger(relay, clock, out)
            finally:
                await clock.stop()
                ticking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticking
        finally:
            await agent.close()
            audit.close()
            for phone in phones:
                phone.close()


async def _linger(relay: Relay, clock: ScheduleSource, out: Any) -> None:
    """After stdin ends, let later sends due within LINGER go out (a scripted demo); woken by
    the clock each time it served one, not by looking at the store."""
    assert relay.deferred is not None
    deadline = time.time() + LINGER
    while time.time() < deadline:
        clock.served.clear()  # before looking: a send served meanwhile wakes the wait
        pending = relay.deferred.pending(None, None, None)
        if not any(d.due <= deadline for d in pending):
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(clock.served.wait(), deadline - time.time())
    pending = relay.deferred.pending(None, None, None)
    if pending:
        out.write(f"deskbot demo: {len(pending)} later send(s) not sent: the demo has ended\n")


def main(as_user: str = "alice") -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(as_user))
