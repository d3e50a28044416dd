"""Two source trees side by side: a 1-phone send and a broadcast, run by run, on one SIPp.

Run by hand, e.g. for the code before a change::

    git worktree add /tmp/deskbot-old 77ac305
    .venv/bin/python bench/fanout_ab.py --phones 10000 --runs 3 --trees /tmp/deskbot-old,$PWD

Each tree is installed as a wheel in a venv of its own (bench/installs.py).
Each run sends `deskbot send 10000` (1 phone) then `deskbot send @all` with
each tree in turn, so both see the same load; prints the median 1-phone time
and the median cost of the broadcast over it. ``--push``: the config also has a
``[push]`` table (as for Poly and Cisco phones), so every send goes through the
format sender that splits SIP phones from HTTP ones.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.fanout import start_sipp, write_config
from bench.installs import install


def timed(tree: str, deskbot: str, cfg: Path, target: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [deskbot, "send", "-c", str(cfg), "--json", target, "bench"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),  # `python -m` (the worker) puts the cwd first on sys.path
        timeout=120,
        env={**os.environ, "DESKBOT_BENCH_PUSH": "bench-push-password"},
    )
    if result.returncode != 0:
        raise SystemExit(f"{tree}: send {target} failed: {result.stderr[-500:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phones", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trees", required=True, help="comma-separated source trees")
    parser.add_argument(
        "--no-phone-trace",
        action="store_true",
        help="SIPp logs no message (it then takes less of the CPU deskbot runs on)",
    )
    parser.add_argument("--push", action="store_true", help="with a [push] table")
    args = parser.parse_args()
    trees = args.trees.split(",")
    with tempfile.TemporaryDirectory(prefix="deskbot-ab-") as tmp:
        workdir = Path(tmp)
        deskbot = {tree: str(install(tree, workdir)) for tree in trees}
        sipp, port, _trace = start_sipp(workdir, trace_msg=not args.no_phone_trace)
        try:
            cfg = write_config(workdir, port, args.phones, 50)
            if args.push:
                with cfg.open("a") as file:
                    file.write('[push]\nusername = "bench"\npassword_env = "DESKBOT_BENCH_PUSH"\n')
            one: dict[str, list[float]] = {t: [] for t in trees}
            extra: dict[str, list[float]] = {t: [] for t in trees}
            for tree in trees:  # the first send validates the config (then cached)
                timed(tree, deskbot[tree], cfg, "10000")
            for _ in range(args.runs):
                for tree in trees:
                    single = timed(tree, deskbot[tree], cfg, "10000")
                    one[tree].append(single)
                    extra[tree].append(timed(tree, deskbot[tree], cfg, "@all") - single)
        finally:
            sipp.kill()
            sipp.wait()
    for tree in trees:
        print(
            f"{tree}: 1 phone median {statistics.median(one[tree]):.3f} s; "
            f"{args.phones} phones cost median {statistics.median(extra[tree]):.3f} s over it "
            f"(min {min(extra[tree]):.3f}, max {max(extra[tree]):.3f})"
        )


if __name__ == "__main__":
    main()
