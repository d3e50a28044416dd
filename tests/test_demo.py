"""`deskbot demo` driven through stdin, as a person (or a script) would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DEMO_INPUT = """\
486 meeting moved
@everyone fire drill
who @sales
history
999 hi
probe @everyone
"""


def test_demo_runs_the_whole_flow_from_stdin():
    deskbot = str(Path(sys.executable).parent / "deskbot")
    result = subprocess.run(
        [deskbot, "demo"], input=DEMO_INPUT, capture_output=True, text=True, timeout=60
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "📟 486 Reception shows: Alice: meeting moved" in out
    assert "✅ 486 (Reception): 200 OK" in out
    assert "⏱️ 488 (Lab): 408 Request Timeout" in out
    assert "❌ 489 (Old desk): 404 Not Found — the phone has no identity 489" in out
    assert "2/4 delivered" in out
    assert "@sales → 2 phone(s):" in out
    assert "→ @everyone (10 chars): 2/4 delivered" in out
    assert "⚠️ extension 999 is not in the directory. Nothing was sent." in out
    assert "📟 487 Warehouse shows: Alice: fire drill" in out  # a Snom Infobox NOTIFY
    assert "✅ 487 (Warehouse): 200 OK" in out
    assert "3/4 phones answer" in out


def test_demo_sends_later_and_from_templates_as_chat_does():
    """Later sends fire in the demo too (its clock runs), also when stdin has already ended."""
    deskbot = str(Path(sys.executable).parent / "deskbot")
    script = "!lunch\nin 1s 486 tea is ready\nscheduled\nin 2h 487 much later\n"
    result = subprocess.run(
        [deskbot, "demo"], input=script, capture_output=True, text=True, timeout=60
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "📟 487 Warehouse shows: Alice: Lunch is in the kitchen" in out  # a template
    assert "• id 1 at " in out and "by alice: 486 tea is ready" in out  # `scheduled`
    assert "📟 486 Reception shows: Alice: tea is ready" in out  # fired after stdin ended
    assert "deskbot demo: 1 later send(s) not sent: the demo has ended" in out
    assert "much later" not in out.split("the demo has ended")[-1]


def test_confirm_in_the_demo_is_pressed_at_reception_and_summed_up():
    """The demo's Reception shows an XML screen with an OK key; the person there presses it
    (an HTTP GET of the key's URL): the thread says so, then who could not confirm."""
    deskbot = str(Path(sys.executable).parent / "deskbot")
    result = subprocess.run(
        [deskbot, "demo"],
        input="confirm @everyone fire drill\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "confirm @everyone fire drill" in out  # the banner's Try: line
    assert "📟 486 Reception shows: Alice: fire drill" in out  # the snom-xml screen
    assert "📟 486 Reception shows: Thank you: your confirmation was received" in out
    assert re.search(r"^486 Reception confirmed at \d\d:\d\d$", out, re.M), out
    assert "✅ 486 (Reception): 200 OK" in out and "; confirm asked" in out
    assert "✅ 487 (Warehouse): 200 OK (" in out
    assert "cannot confirm (format snom-infobox)" in out
    assert "❌ 489 (Old desk): 404 Not Found" in out
    assert "cannot confirm (format message)" in out
    assert "2/4 delivered" in out
    assert re.search(r"^1/4 confirmed$", out, re.M), out  # told after confirm_within
    assert "not told: the demo has ended" not in out


async def test_the_demo_waits_for_later_sends_woken_by_the_clock_not_by_polling_the_store():
    """After stdin ends the demo waits for a send due soon: the schedule source wakes it when
    it served one; the store is looked at once per wake-up, not ten times a second."""
    import asyncio
    import io
    import time
    from types import SimpleNamespace

    from deskbot.cli.demo import _linger

    looks: list[float] = []
    due = [SimpleNamespace(due=time.time() + 1.0)]

    def pending(*_: object) -> list:
        looks.append(time.time())
        return list(due)

    relay = SimpleNamespace(deferred=SimpleNamespace(pending=pending))
    clock = SimpleNamespace(served=asyncio.Event())

    async def fire() -> None:
        await asyncio.sleep(1.0)
        due.clear()  # served: closed in the store, then the event is set
        clock.served.set()

    out = io.StringIO()
    firing = asyncio.create_task(fire())
    await asyncio.wait_for(_linger(relay, clock, out), 10)  # type: ignore[arg-type]
    await firing
    assert len(looks) <= 3, len(looks)
    assert out.getvalue() == ""  # nothing left unsent


async def test_the_simulated_screen_phone_takes_snom_xml_as_a_snom_does_and_refuses_the_rest():
    """Event: xml, an active subscription, application/snomxml and a SnomIPPhoneText: shown,
    200; anything else is refused and shown nothing (nobody presses a key never shown)."""
    import asyncio

    from deskbot.senders.screens import snom
    from deskbot.senders.sip.phonesim import SimulatedPhone

    phone = await SimulatedPhone("486", screen=True).start()
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    good = snom.body("Alice: a<b>\nsecond line").encode()

    async def notify(n: int, body: bytes, event: str = "xml", state: str = "active") -> str:
        head = (
            f"NOTIFY sip:486@127.0.0.1:{phone.port} SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z{n}\r\n"
            f"From: <sip:d@x>;tag=1\r\nTo: <sip:486@x>\r\nCall-ID: c{n}\r\nCSeq: 1 NOTIFY\r\n"
            f"Event: {event}\r\nSubscription-State: {state}\r\n"
            f"Content-Type: application/snomxml\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        transport.sendto(head.encode() + body, ("127.0.0.1", phone.port))
        return (await asyncio.wait_for(answers.get(), 5)).split(b"\r\n")[0].decode()

    try:
        assert await notify(1, good) == "SIP/2.0 200 OK"
        assert phone.screen.lines == ["Alice: a<b> / second line"]
        assert await notify(2, good, state="terminated") == "SIP/2.0 400 Bad Request"
        assert await notify(3, good, event="dialog") == "SIP/2.0 489 Bad Event"
        infobox = b'<?xml version="1.0"?><InfoBoxQueue><Line><Text>x</Text></Line></InfoBoxQueue>'
        assert await notify(4, infobox) == "SIP/2.0 400 Bad Request"
        assert await notify(5, b"<SnomIPPhoneText><Text>") == "SIP/2.0 400 Bad Request"
        assert phone.screen.lines == ["Alice: a<b> / second line"]
    finally:
        transport.close()
        phone.close()
