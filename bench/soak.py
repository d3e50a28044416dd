"""Memory over a long run: many sends through one agent; RSS of deskbot and its worker.

Run by hand: ``.venv/bin/python bench/soak.py --rounds 10 --gap 6``. Each round
is a 1,000-phone broadcast to a simulated phone, ``--gap`` seconds apart; RSS
is printed after each round, so a leak in the agent, the worker or pjsua2
shows as growth from round to round. pjsip keeps a finished UDP transaction
for Timer K (T4 = 5 s), so rounds closer than 5 s add up by design.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deskbot.directory.snapshot import Phone
from deskbot.senders.sip.agent import SipAgent
from deskbot.senders.sip.phonesim import SimulatedPhone
from deskbot.settings.schema import Sip


async def soak(rounds: int, phones: int, gap: float) -> None:
    phone = await SimulatedPhone("486").start()
    agent = SipAgent(Sip(listen="127.0.0.1:0", timeout=5.0))
    await agent.start()
    me, worker = psutil.Process(), psutil.Process(agent.state.pid)
    try:
        started = time.perf_counter()
        for n in range(1, rounds + 1):
            results = await asyncio.gather(
                *(
                    agent.send(Phone(str(10000 + i), phone.uri(str(10000 + i))), f"round {n}")
                    for i in range(phones)
                )
            )
            assert {d.code for d in results} == {404}, {d.code for d in results}
            print(
                f"after {n * phones:>7,} sends: deskbot RSS {me.memory_info().rss >> 20} MiB, "
                f"worker RSS {worker.memory_info().rss >> 20} MiB"
            )
            await asyncio.sleep(gap)
        elapsed = time.perf_counter() - started
        print(f"{rounds * phones:,} sends in {elapsed:.1f} s")
    finally:
        await agent.close()
        phone.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--gap", type=float, default=6.0, help="seconds between rounds")
    parser.add_argument("--phones", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(soak(args.rounds, args.phones, args.gap))


if __name__ == "__main__":
    main()
