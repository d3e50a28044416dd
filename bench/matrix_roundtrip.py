"""Matrix command-to-reply time on loopback: a person sends `!deskphone 486 x`, a SIPp
phone answers 200, and the clock stops when the person's client sees the thread reply.

Run by hand: ``.venv/bin/python bench/matrix_roundtrip.py --runs 20``. Starts its own
Synapse (the test suite's fixture code), one SIPp phone and ``deskbot run``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import SippPhone, answer_scenario  # noqa: E402
from matrix_people import DEVICE, Deskbot, Person, config_text, join  # noqa: E402
from matrix_server import Synapse  # noqa: E402

LIMITS = """
[limits]
per_sender_per_minute = 10000
per_phone_per_minute = 10000
"""


async def measure(runs: int, warmup: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        server = Synapse(tmp / "synapse")
        server.start()
        phone = SippPhone(answer_scenario(tmp), tmp)
        deskbot = None
        alice = None
        try:
            bot = server.register("deskbot", DEVICE)
            alice = Person(server, server.register("alice"), tmp / "alice")
            room = await alice.create_room(invite=[bot.user_id])
            join(server, bot, room)
            phones = {ext: f"sip:{ext}@127.0.0.1:9" for ext in ("487", "488", "489")}
            phones["486"] = phone.uri("486")
            etc = tmp / "etc"
            etc.mkdir()
            config = etc / "deskbot.toml"
            config.write_text(config_text(tmp, server, bot, alice.user_id, phones, extra=LIMITS))
            deskbot = Deskbot(config, bot.access_token, tmp).start()
            await alice.sync()
            times: list[float] = []
            for i in range(warmup + runs):
                start = time.perf_counter()
                command = await alice.say(room, "!deskphone 486 x")
                await alice.reply_to(command)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1000)
                await alice.wait("✅", lambda c=command: "✅" in alice.reactions_to(c))
            own = [float(ms) for ms in re.findall(r"1/1 delivered in ([0-9.]+) ms", deskbot.log())]
            return times, own[warmup:]
        finally:
            if deskbot:
                deskbot.stop()
            if alice:
                await alice.close()
            phone.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    times, own = asyncio.run(measure(args.runs, args.warmup))
    print(f"runs: {len(times)}")
    print(
        f"round trip: median {statistics.median(times):.0f} ms  p95 {p95(times):.0f} ms  "
        f"(min {min(times):.0f}, max {max(times):.0f})"
    )
    print(
        f"deskbot's part (relay, audit, SIP round trip to the phone): "
        f"median {statistics.median(own):.1f} ms  p95 {p95(own):.1f} ms"
    )


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]


if __name__ == "__main__":
    main()
