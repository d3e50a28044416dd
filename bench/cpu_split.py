"""Where a broadcast's CPU goes: deskbot, its SIP worker, and the SIPp phone, per run.

Run by hand: ``.venv/bin/python bench/cpu_split.py --phones 10000 --runs 3``
(``--trees /tmp/deskbot-old,$PWD`` for two trees, run by run in turn). All
three share this machine's cores, so a broadcast cannot take less wall time
than their CPU over the cores. This process is the reaper of the worker that
`deskbot send` kills on its way out: deskbot is reaped first (its CPU), the
worker next (its CPU). SIPp's comes from /proc.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.fanout import become_subreaper, reap_orphans, start_sipp, write_config
from bench.installs import ROOT, install


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(deskbot: str, cfg: Path, target: str, sipp: int) -> tuple[float, float, float, float]:
    """(wall, deskbot CPU, worker CPU, SIPp CPU) of one `deskbot send`."""
    before, phone = children_cpu(), process_cpu(sipp)
    started = time.perf_counter()
    result = subprocess.run(
        [deskbot, "send", "-c", str(cfg), "--json", target, "bench"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"send {target} failed ({result.returncode}): {result.stderr[-500:]}")
    parent = children_cpu()
    reap_orphans()
    return wall, parent - before, children_cpu() - parent, process_cpu(sipp) - phone


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phones", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trees", default="", help="comma-separated project trees")
    parser.add_argument("--no-phone-trace", action="store_true")
    args = parser.parse_args()
    become_subreaper()
    trees = args.trees.split(",") if args.trees else [str(ROOT)]
    with tempfile.TemporaryDirectory(prefix="deskbot-cpu-") as tmp:
        workdir = Path(tmp)
        deskbot = {tree: str(install(tree, workdir)) for tree in trees}
        sipp, port, _trace = start_sipp(workdir, trace_msg=not args.no_phone_trace)
        try:
            cfg = write_config(workdir, port, args.phones, 50)
            rows: dict[str, list[tuple[float, ...]]] = {tree: [] for tree in trees}
            for tree in trees:  # the first send validates the config (then cached)
                run(deskbot[tree], cfg, "10000", sipp.pid)
            for _ in range(args.runs):
                for tree in trees:
                    one = run(deskbot[tree], cfg, "10000", sipp.pid)
                    every = run(deskbot[tree], cfg, "@all", sipp.pid)
                    rows[tree].append(tuple(e - o for e, o in zip(every, one, strict=True)))
        finally:
            sipp.kill()
            sipp.wait()
    for tree, extra in rows.items():
        wall, parent, worker, phone = (statistics.median(col) for col in zip(*extra, strict=True))
        print(
            f"{tree}: {args.phones} phones over a 1-phone send, median of {args.runs}: "
            f"wall {wall:.3f} s; CPU deskbot {parent:.3f} s, worker {worker:.3f} s, "
            f"SIPp {phone:.3f} s"
        )


if __name__ == "__main__":
    main()
