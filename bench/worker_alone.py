"""The SIP worker's own cost per MESSAGE: its code and pjsua2 in one thread, nothing else.

Run by hand: ``.venv/bin/python bench/worker_alone.py --phones 10000 --runs 5``.
The worker's ``Worker`` (the same class `deskbot send` runs in its child
process) is driven straight from this process: no parent, no pipe, no JSON
protocol, no relay, no audit log. Up to ``--in-flight`` MESSAGEs are out at a
time to a SIPp phone that logs nothing, and the CPU this process spends until
every answer is in is divided by the number of messages. That is the least a
broadcast can cost in the worker, whatever deskbot does around it.
``--profile``: where that CPU goes, by function (pjsua2's C calls by name).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.fanout import WORKER_START, start_sipp

if TYPE_CHECKING:
    from deskbot.senders.sip.worker import Worker


class Lines(io.RawIOBase):
    """The worker's protocol output, counted and dropped."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.bytes += len(data)
        return len(data)


def drive(w: Worker, port: int, phones: int, in_flight: int) -> None:
    """Every MESSAGE out, ``in_flight`` at a time, as the worker's own loop would."""
    out, answered, following = 0, 0, 0
    while answered < phones:
        while out - answered < in_flight and following < phones:
            w.send(following, f"sip:{10000 + following}@127.0.0.1:{port}", "bench")
            following += 1
            out += 1
        handled = w.ep.libHandleEvents(10)
        for _ in range(64):
            if handled <= 0:
                break
            handled = w.ep.libHandleEvents(0)
        if w.outbox:
            codes = {item[1] for item in w.outbox}
            if codes != {200}:
                raise SystemExit(f"the phone answered {codes}, not 200")
            answered += len(w.outbox)
            w.emit_done()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phones", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=60)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    from deskbot.senders.sip.worker import Worker

    with tempfile.TemporaryDirectory(prefix="deskbot-worker-") as tmp:
        sipp, port, _ = start_sipp(Path(tmp), trace_msg=False)
        try:
            worker = Worker(WORKER_START, Lines())
            worker.create()
            drive(worker, port, min(args.phones, 100), args.in_flight)  # warm: pools, tokens
            cpu, wall = [], []
            for _ in range(args.runs):
                profile = cProfile.Profile(time.process_time) if args.profile else None
                began, began_wall = time.process_time(), time.perf_counter()
                if profile:
                    profile.enable()
                drive(worker, port, args.phones, args.in_flight)
                if profile:
                    profile.disable()
                cpu.append(time.process_time() - began)
                wall.append(time.perf_counter() - began_wall)
            per = statistics.median(cpu) / args.phones * 1e6
            print(
                f"worker alone, {args.phones} MESSAGEs, {args.in_flight} in flight, "
                f"median of {args.runs}: wall {statistics.median(wall):.3f} s, "
                f"CPU {statistics.median(cpu):.3f} s = {per:.1f} us per message "
                f"(least {min(cpu) / args.phones * 1e6:.1f} us)"
            )
            if profile:
                text = io.StringIO()
                pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
                print("last run, by own time (the profiler slows the Python parts):")
                print(text.getvalue())
        finally:
            sipp.kill()
            sipp.wait()
    sys.stdout.flush()
    os._exit(0)  # as the worker ends: pjsua2's objects must not be freed by the interpreter


if __name__ == "__main__":
    main()
