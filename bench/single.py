"""One `deskbot send` (and `deskbot probe`) to one phone on loopback: the sipsak comparison.

Run by hand: ``.venv/bin/python bench/single.py --runs 20``. One SIPp phone
answers 200 to MESSAGE, NOTIFY and OPTIONS; each run is a whole process, as a
shell script calling ``deskbot send 486 text`` sees it. Prints the median and
the spread. Each tree (this checkout unless ``--trees`` names others, e.g. a
``git worktree`` of an older commit) is timed as a wheel installed in a venv
of its own (bench/installs.py), run by run in turn.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.fanout import become_subreaper, reap_orphans, start_sipp
from bench.installs import ROOT, install


def cpu_seconds() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


CPU: dict[str, list[float]] = {}  # per command line: CPU of deskbot and its worker, per run


def timed(argv: list[str]) -> float:
    cpu = cpu_seconds()
    started = time.perf_counter()
    # cwd: `python -m` (the worker) puts the working directory first on sys.path
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir()
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[1]} failed ({result.returncode}): {result.stderr[-500:]}")
    reap_orphans()  # the worker `send` killed on its way out: its CPU counts too
    CPU.setdefault(" ".join(argv), []).append(cpu_seconds() - cpu)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--what", default="send,probe", help="send, probe, or both")
    parser.add_argument("--format", default="message", help='the phone\'s format ("message")')
    parser.add_argument(
        "--trees",
        default="",
        help="comma-separated project trees to time in turn, run by run (default: this one)",
    )
    args = parser.parse_args()
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="deskbot-single-") as tmp:
        workdir = Path(tmp)
        trees = args.trees.split(",") if args.trees else [str(ROOT)]
        deskbot = {tree: str(install(tree, workdir)) for tree in trees}
        sipp, port, _trace = start_sipp(workdir)
        cfg = workdir / "one.toml"
        lines = ["[sip]", 'listen = "127.0.0.1:0"', "[audit]", f'path = "{workdir / "a.db"}"']
        lines += ["[phones.486]", f'uri = "sip:486@127.0.0.1:{port}"']
        if args.format != "message":
            lines.append(f'format = "{args.format}"')
        cfg.write_text("\n".join(lines) + "\n")
        try:
            for what in args.what.split(","):
                text = ["bench"] if what == "send" else []
                argv = [what, "-c", str(cfg), "486", *text]
                times: dict[str, list[float]] = {tree: [] for tree in trees}
                for tree in trees:
                    timed([deskbot[tree], *argv])  # warm the page cache
                for _ in range(args.runs):
                    for tree in trees:  # interleaved: both see the same load
                        times[tree].append(timed([deskbot[tree], *argv]))
                for tree, runs in times.items():
                    cpu = CPU[" ".join([deskbot[tree], *argv])][1:]  # not the warm-up run
                    print(
                        f"deskbot {what} to 1 phone ({tree}), "
                        f"{args.runs} runs: median {statistics.median(runs):.3f} s "
                        f"(min {min(runs):.3f}, max {max(runs):.3f}); CPU of deskbot and its "
                        f"worker median {statistics.median(cpu):.3f} s"
                    )
        finally:
            sipp.kill()
            sipp.wait()


if __name__ == "__main__":
    main()
