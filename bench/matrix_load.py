"""Matrix under load: 20 people send 10 commands each at once to four phones of different speeds.

Run by hand: ``.venv/bin/python bench/matrix_load.py [--runs 3]``. It starts its own
Synapse, four SIPp phones (answering after 0, 50, 200 and 500 ms) and ``deskbot run``,
runs the scenario of ``tests/test_load.py`` (which checks every reply, thread and
limit), and prints commands per second and command-to-reply times (p50, p99), measured
between the two events' timestamps on the homeserver.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import SippPhone, answer_scenario  # noqa: E402
from matrix_people import DEVICE, Deskbot, Person, config_text  # noqa: E402
from matrix_server import Synapse  # noqa: E402
from test_load import DELAYS_MS, LIMITS, Outcome, crowd, load  # noqa: E402


def phone(tmp: Path, delay_ms: int) -> SippPhone:
    return SippPhone(answer_scenario(tmp, delay_ms=delay_ms), tmp)


async def run_once(tmp: Path, server: Synapse) -> Outcome:
    phones = {ext: phone(tmp, ms) for ext, ms in DELAYS_MS.items()}
    made: list[Person] = []

    def person(name: str) -> Person:
        made.append(Person(server, server.register(name), tmp / f"client-{len(made)}"))
        return made[-1]

    bot = server.register("deskbot", DEVICE)
    deskbot = None
    try:
        people, room = await crowd(server, person, bot)
        etc = tmp / "etc"
        etc.mkdir()
        config = etc / "deskbot.toml"
        uris = {ext: p.uri(ext) for ext, p in phones.items()}
        config.write_text(
            config_text(tmp, server, bot, people[0].user_id, uris, extra=LIMITS, timeout=5.0)
        )
        deskbot = Deskbot(config, bot.access_token, tmp).start()
        return await load(server, people, room, phones)
    finally:
        if deskbot:
            deskbot.stop()
        for p in made:
            await p.close()
        for p in phones.values():
            p.stop()


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        server = Synapse(Path(name) / "synapse")
        server.start()
        try:
            for n in range(runs):
                tmp = Path(name) / f"run{n}"
                tmp.mkdir()
                outcome = await run_once(tmp, server)
                print(
                    f"run {n + 1}: {len(outcome.reply_ms)} commands, "
                    f"{outcome.commands_per_second:.1f} commands/s; command to reply "
                    f"p50 {outcome.p50:.0f} ms, p99 {outcome.p99:.0f} ms, "
                    f"max {max(outcome.reply_ms):.0f} ms"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
