"""One `deskbot send` (and `deskbot probe`) to one phone on loopback: the sipsak comparison.

Run by hand: ``.venv/bin/python bench/single.py --runs 20``. One SIPp phone
answers 200 to MESSAGE, NOTIFY and OPTIONS; each run is a whole process, as a
shell script calling ``deskbot send 486 text`` sees it. Prints the median and
the spread. Each tree (this checkout unless ``--trees`` names others, e.g. a
``git worktree`` of an older commit) is timed as a wheel installed in a venv
of its own (bench/installs.py), run by run in turn.

``--run``: a ``deskbot run`` of the last tree is up on the same config
meanwhile, so a send of a tree that hands its command over goes through it
(the run's own CPU is not counted). ``--sipsak``: a ``sipsak`` OPTIONS ping to
the same phone is timed in the same turns.
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
    parser.add_argument("--run", action="store_true", help="a deskbot run is up meanwhile")
    parser.add_argument("--sipsak", action="store_true", help="time a sipsak ping in turn")
    args = parser.parse_args()
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="deskbot-single-") as tmp:
        workdir = Path(tmp)
        trees = args.trees.split(",") if args.trees else [str(ROOT)]
        deskbot = {tree: str(install(tree, workdir)) for tree in trees}
        sipp, port, _trace = start_sipp(workdir)
        cfg = workdir / "one.toml"
        lines = ["[sip]", 'listen = "127.0.0.1:0"', "[audit]", f'path = "{workdir / "a.db"}"']
        lines += ["[health]", 'listen = "127.0.0.1:0"']
        lines += ["[limits]", "per_phone_per_minute = 1000000"]  # a run counts every send
        lines += ["[phones.486]", f'uri = "sip:486@127.0.0.1:{port}"']
        if args.format != "message":
            lines.append(f'format = "{args.format}"')
        cfg.write_text("\n".join(lines) + "\n")
        run = None
        ping = ["sipsak", "-s", f"sip:486@127.0.0.1:{port}"]
        try:
            if args.run:
                run = start_run(deskbot[trees[-1]], cfg, workdir)
            for what in args.what.split(","):
                text = ["bench"] if what == "send" else []
                argv = [what, "-c", str(cfg), "486", *text]
                times: dict[str, list[float]] = {tree: [] for tree in trees}
                for tree in trees:
                    timed([deskbot[tree], *argv])  # warm the page cache
                pings: list[float] = []
                for _ in range(args.runs):
                    for tree in trees:  # interleaved: both see the same load
                        times[tree].append(timed([deskbot[tree], *argv]))
                    if args.sipsak:
                        pings.append(timed(ping))
                if pings:
                    print(
                        f"sipsak OPTIONS ping, {args.runs} runs: median "
                        f"{statistics.median(pings):.3f} s (min {min(pings):.3f})"
                    )
                for tree, runs in times.items():
                    cpu = CPU[" ".join([deskbot[tree], *argv])][1:]  # not the warm-up run
                    print(
                        f"deskbot {what} to 1 phone ({tree}), "
                        f"{args.runs} runs: median {statistics.median(runs):.3f} s "
                        f"(min {min(runs):.3f}, max {max(runs):.3f}); CPU of deskbot and its "
                        f"worker median {statistics.median(cpu):.3f} s"
                    )
        finally:
            if run is not None:
                run.terminate()
                run.wait()
            sipp.kill()
            sipp.wait()


def start_run(deskbot: str, cfg: Path, workdir: Path) -> subprocess.Popen[bytes]:
    """`deskbot run` on the bench's config, once it takes one-shot sends."""
    log = workdir / "run.log"
    run = subprocess.Popen(
        [deskbot, "run", "-c", str(cfg)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=tempfile.gettempdir(),
    )
    deadline = time.monotonic() + 30
    while "deskbot running" not in log.read_text(errors="replace"):
        if run.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"deskbot run did not start: {log.read_text()[-500:]}")
        time.sleep(0.05)
    return run


if __name__ == "__main__":
    main()
