"""Broadcast to 1,000 distinct extensions on one SIPp phone; compare with baselines.

Run by hand: ``make bench`` (or ``.venv/bin/python bench/fanout.py --phones 1000``).
Reports, for the whole ``deskbot send @all`` process and for the agent alone:
throughput, p50/p99 latency, retransmissions seen by SIPp, peak RSS; then a
1-phone ``deskbot send`` and a one-process-per-message loop for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="answer 200 to anything (MESSAGE, and NOTIFY and OPTIONS for bench/single.py)">
  <recv request="OPTIONS" optional="true" next="answer" />
  <recv request="NOTIFY" optional="true" next="answer" />
  <recv request="MESSAGE" />
  <label id="answer" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sipp(workdir: Path, trace_msg: bool = True) -> tuple[subprocess.Popen[bytes], int, Path]:
    """SIPp answering 200 to everything; ``trace_msg`` logs each message (the count check;
    on a 10,000-phone broadcast it costs SIPp about 0.2 s of the same two cores)."""
    port = free_port()
    scenario = workdir / "bench.xml"
    scenario.write_text(SCENARIO)
    trace = workdir / f"sipp-{port}.log"
    proc = subprocess.Popen(
        [
            shutil.which("sipp") or "sipp",
            "-sf",
            str(scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-nostdin",
            *(["-trace_msg", "-message_file", str(trace)] if trace_msg else []),
            "-max_recv_loops",
            "100000",
            "-buff_size",
            "4194304",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return proc, port, trace
        time.sleep(0.02)
    raise SystemExit("SIPp did not start")


def received_counts(trace: Path) -> tuple[int, int]:
    """(MESSAGE requests received, distinct Call-IDs) from SIPp's trace."""
    total, call_ids = 0, set()
    for block in trace.read_text(errors="replace").split("message received")[1:]:
        lines = block.split("\n")
        if len(lines) > 2 and lines[2].startswith("MESSAGE "):
            total += 1
            call_ids.update(ln for ln in lines if ln.lower().startswith("call-id:"))
    return total, len(call_ids)


def write_config(workdir: Path, port: int, phones: int, in_flight: int) -> Path:
    lines = [
        "[sip]",
        'listen = "127.0.0.1:0"',
        "timeout = 5.0",
        f"max_in_flight = {in_flight}",
        "[audit]",
        f'path = "{workdir / "audit.sqlite3"}"',
    ]
    for i in range(phones):
        ext = str(10000 + i)
        lines += [f"[phones.{ext}]", f'uri = "sip:{ext}@127.0.0.1:{port}"']
    members = ", ".join(f'"{10000 + i}"' for i in range(phones))
    lines += ["[groups.all]", f"members = [{members}]"]
    path = workdir / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_send(cfg: Path, target: str) -> tuple[float, list[dict[str, object]], int]:
    deskbot = str(Path(sys.executable).parent / "deskbot")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(
        [deskbot, "send", "-c", str(cfg), "--json", target, "bench"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    if result.returncode != 0:
        raise SystemExit(f"send {target} failed ({result.returncode}): {result.stderr[-500:]}")
    reap_orphans()
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, rows, max(rss, before)


def become_subreaper() -> None:
    """Orphans of our children come to us: `deskbot send` kills its SIP worker and leaves
    without waiting for it, so only as its reaper do we see the worker's peak RSS."""
    PR_SET_CHILD_SUBREAPER = 36
    if ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
        raise SystemExit("cannot become a subreaper: the worker's memory would not be counted")


def reap_orphans(within: float = 2.0) -> None:
    """Wait for the one worker a `deskbot send` left (killed, about to be a zombie)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG)
        if found is not None:
            return
        time.sleep(0.005)


async def agent_only(port: int, phones: int, in_flight: int) -> tuple[float, list[float]]:
    sys.path.insert(0, str(ROOT))
    from deskbot.directory.snapshot import Phone
    from deskbot.senders.sip.agent import SipAgent
    from deskbot.settings.schema import Sip

    agent = SipAgent(Sip(listen="127.0.0.1:0", timeout=5.0, max_in_flight=in_flight))
    await agent.start()
    try:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                agent.send(Phone(str(20000 + i), f"sip:{20000 + i}@127.0.0.1:{port}"), "b")
                for i in range(phones)
            )
        )
        elapsed = time.perf_counter() - started
    finally:
        await agent.close()
    assert all(d.code == 200 for d in results), {d.code for d in results}
    return elapsed, [d.elapsed_ms for d in results]


# what the SIP agent tells its worker at start, for a worker driven in this process
WORKER_START = {
    "host": "127.0.0.1",
    "port": 0,
    "transport": "udp",
    "log_level": 1,
    "from_uri": "sip:deskbot@127.0.0.1",
    "display_name": "Deskbot",
    "timeout_ms": 5000,
    "registrar": None,
}


class InProcessAgent:
    """The design the worker process replaced: pjsua2 polled by a thread of this process.

    It reuses the worker's own code, so the two differ only in where pjsua2 runs.
    """

    def __init__(self, phones_port: int) -> None:
        self.futures: dict[int, asyncio.Future[tuple[int, float]]] = {}
        self.started: dict[int, float] = {}
        self.ready = threading.Event()

    def write(self, line: bytes) -> None:  # called in the pjsua2 thread
        message = json.loads(line)
        if message["op"] == "ready":
            self.ready.set()
        elif message["op"] == "done":
            now = time.perf_counter()
            for send_id, code, _reason, _local in message["items"]:
                future = self.futures.pop(send_id)
                elapsed = (now - self.started.pop(send_id)) * 1000
                self.loop.call_soon_threadsafe(future.set_result, (code, elapsed))

    def flush(self) -> None:
        pass

    async def run(self, port: int, phones: int, in_flight: int) -> tuple[float, list[float]]:
        from deskbot.senders.sip.worker import Worker

        self.loop = asyncio.get_running_loop()
        worker = Worker(WORKER_START, self)
        thread = threading.Thread(target=lambda: (worker.create(), worker.run()), daemon=True)
        thread.start()
        await asyncio.to_thread(self.ready.wait, 10)
        slots = asyncio.Semaphore(in_flight)

        async def send(i: int) -> tuple[int, float]:
            async with slots:
                future = self.loop.create_future()
                self.futures[i] = future
                self.started[i] = time.perf_counter()
                worker.inbox.append(
                    {"op": "send", "items": [[i, f"sip:{30000 + i}@127.0.0.1:{port}", "b"]]}
                )
                worker.wake()
                return await future

        started = time.perf_counter()
        results = await asyncio.gather(*(send(i) for i in range(phones)))
        elapsed = time.perf_counter() - started
        worker.inbox.append({"op": "stop"})
        worker.wake()
        await asyncio.to_thread(thread.join, 5)
        assert all(code == 200 for code, _ in results)
        return elapsed, [ms for _, ms in results]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def inprocess_run(port: int, phones: int, in_flight: int) -> tuple[float, list[float]]:
    code = (
        "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); import fanout; "
        "t, lat = asyncio.run(fanout.InProcessAgent(0).run(*map(int, sys.argv[2:5]))); "
        "print(json.dumps([t, lat]))"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(Path(__file__).parent),
            str(port),
            str(phones),
            str(in_flight),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    ).stdout
    elapsed, latencies = json.loads(out.strip().splitlines()[-1])
    return elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--loop", type=int, default=30, help="sends in the per-process loop")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="deskbot-bench-") as tmp:
        workdir = Path(tmp)
        sipp, port, trace = start_sipp(workdir)
        try:
            cfg = write_config(workdir, port, args.phones, args.in_flight)
            one, broadcast, rss = [], [], 0
            latencies: list[float] = []
            for _ in range(args.runs):
                t1, _rows, _ = run_send(cfg, "10000")
                tn, rows, rss = run_send(cfg, "@all")
                one.append(t1)
                broadcast.append(tn)
                latencies += [float(r["elapsed_ms"]) for r in rows]
            agent_times, agent_lat = [], []
            for _ in range(args.runs):
                elapsed, lat = asyncio.run(agent_only(port, args.phones, args.in_flight))
                agent_times.append(elapsed)
                agent_lat += lat
            # pjsua2 allows one endpoint per process: the in-process runs get a process each
            inproc = [inprocess_run(port, args.phones, args.in_flight) for _ in range(args.runs)]
            loop_started = time.perf_counter()
            for _ in range(args.loop):
                run_send(cfg, "10000")
            per_process = (time.perf_counter() - loop_started) / args.loop
            total, distinct = received_counts(trace)
        finally:
            sipp.kill()
            sipp.wait()
    extra = [b - o for b, o in zip(broadcast, one, strict=True)]
    loop_estimate = per_process * args.phones
    inproc_times = [t for t, _ in inproc]
    inproc_lat = [ms for _, lat in inproc for ms in lat]
    print(f"phones={args.phones} in_flight={args.in_flight} runs={args.runs}")
    print(f"deskbot send 1 phone:        median {statistics.median(one):.3f} s")
    print(
        f"deskbot send @all:           median {statistics.median(broadcast):.3f} s "
        f"(min {min(broadcast):.3f}, max {max(broadcast):.3f})"
    )
    print(
        f"  cost over a 1-phone send:  median {statistics.median(extra):.3f} s "
        f"(min {min(extra):.3f}, max {max(extra):.3f})"
    )
    print(
        f"  per-message latency:       p50 {pct(latencies, 0.5):.1f} ms, "
        f"p99 {pct(latencies, 0.99):.1f} ms"
    )
    print(f"  peak RSS, largest process (deskbot or its worker): {rss / 1024:.0f} MiB")
    best = min(agent_times)
    print(
        f"agent alone, {args.phones} sends:  median {statistics.median(agent_times):.3f} s, "
        f"best {best:.3f} s = {args.phones / best:,.0f} msg/s; "
        f"p50 {pct(agent_lat, 0.5):.1f} ms, p99 {pct(agent_lat, 0.99):.1f} ms"
    )
    print(
        f"in-process agent (thread), {args.phones} sends: "
        f"median {statistics.median(inproc_times):.3f} s, best {min(inproc_times):.3f} s; "
        f"p50 {pct(inproc_lat, 0.5):.1f} ms, p99 {pct(inproc_lat, 0.99):.1f} ms"
    )
    print(
        f"one process per message:     {per_process:.3f} s each -> {args.phones} phones "
        f"~{loop_estimate:.1f} s; @all is {loop_estimate / statistics.median(broadcast):.0f}x "
        "faster"
    )
    print(
        f"SIPp received {total} MESSAGE requests for {distinct} distinct Call-IDs: "
        f"{total - distinct} retransmissions"
    )


if __name__ == "__main__":
    main()
