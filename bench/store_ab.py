"""SQLite against PostgreSQL, side by side: a broadcast, a command's own part, a take-over.

Run by hand (not in CI)::

    .venv/bin/python bench/store_ab.py --phones 1000 --runs 5

It starts a PostgreSQL of its own (the tests' fixture: initdb in a temp
folder, on loopback) and one SIPp answering 200 for every extension, then
measures, alternating the two stores run by run so both see the same load:

1. `deskbot send @all` to N phones, the whole process (the audit log records
   the command, N answers and the end), and the same for 1 phone; the cost of
   the broadcast is the difference;
2. a command's own part in the relay (key check, record, rate windows, the
   answer written, answered mark) with an instant recording sender: the part
   of a Matrix round trip that is deskbot's, without SIP and Synapse;
3. on PostgreSQL, how long after a replica stops renewing its hold another
   answers its command (lease 2 s; rounds every lease / 3);
4. the same after a SIGKILL: a child process records a command and renews its
   hold every lease / 3 as a replica does, and is killed; the time from the
   kill to the other replica's answer (target: within lease + 5 s).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from postgres_server import PASSWORD, PASSWORD_ENV, Postgres

from bench.fanout import become_subreaper, run_send, start_sipp, write_config


def with_store(cfg: Path, url: str | None) -> Path:
    """The bench config on PostgreSQL (url) or as written (SQLite)."""
    if url is None:
        return cfg
    text = cfg.read_text()
    start = text.index("[audit]")
    end = text.index("[phones.")
    out = cfg.with_name("bench-pg.toml")
    audit = f'[audit]\nurl = "{url}"\npassword_env = "{PASSWORD_ENV}"\n'
    out.write_text(text[:start] + audit + text[end:])
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def own_part(store: object, n: int) -> list[float]:
    """ms per keyed 1-phone command through serve(), recording sender, this store."""
    from conftest import Chat
    from test_relay import ALICE, settings

    from deskbot.directory import loader
    from deskbot.relay.relay import Relay
    from deskbot.relay.values import Policy, Request
    from deskbot.senders.recording import RecordingSender
    from deskbot.sources.serve import serve

    s = settings(limits={"per_sender_per_minute": 100000, "per_phone_per_minute": 100000})
    relay = Relay(RecordingSender(), loader.from_settings(s), Policy.from_settings(s), store)  # type: ignore[arg-type]
    times = []
    for i in range(n):
        started = time.perf_counter()
        await serve(relay, Request(ALICE, "486 x", "!r", key=f"k{time.time()}-{i}"), Chat())
        times.append((time.perf_counter() - started) * 1000)
    return times


async def takeover(url: str, runs: int) -> list[float]:
    """Seconds from a hold's expiry to another replica's answer of the command."""
    from test_replicas import Replica, command

    from deskbot.store.postgres import PostgresLog

    def store(name: str, lease: float) -> PostgresLog:
        return PostgresLog(url, PASSWORD, name, lease)

    took = []
    for i in range(runs):
        a, b = Replica(store, f"a{i}", lease=2.0), Replica(store, f"b{i}", lease=2.0)
        a.phones.gate = asyncio.Event()
        from deskbot.sources.serve import serve

        stalled = asyncio.ensure_future(serve(a.relay, command(f"k{i}-{time.time()}"), a.room.chat))
        while not a.relay.held:
            await asyncio.sleep(0.001)
        key = next(iter(a.relay.held.values()))
        stop = asyncio.Event()
        rounds = asyncio.ensure_future(b.replicas.run(stop))
        expires = a.audit.seen(key).lease_until
        while not b.room.chat.shown:
            await asyncio.sleep(0.01)
        took.append(time.time() - expires)
        stop.set()
        await rounds
        stalled.cancel()
        for r in (a, b):
            r.audit.close()
    return took


ROUNDS = 3  # the command's own part, alternating the stores

# a replica that records one command and renews its hold until it is killed
HOLDER = """
import sys, time
from deskbot.store.base import Planned
from deskbot.store.postgres import PostgresLog
url, password, key, lease = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
log = PostgresLog(url, password, "killed-" + key, lease)
plan = [Planned("486", "sip:486@127.0.0.1:9", "Desk 486", "")]
i = log.command(key=key, chat="slack", sender_id="U0ALICE01", person="alice", place="#ops",
                targets="486", text_chars=5, plan=plan, thread="ts1")
print("recorded", flush=True)
while True:
    time.sleep(lease / 3)
    log.hold([i])
"""


async def killed(url: str, runs: int, lease: float = 2.0) -> list[float]:
    """Seconds from a replica's SIGKILL to another replica's answer of its command."""
    import os
    import signal
    import subprocess

    from test_replicas import Replica

    from deskbot.store.postgres import PostgresLog

    def store(name: str, lease: float) -> PostgresLog:
        return PostgresLog(url, PASSWORD, name, lease)

    took = []
    for i in range(runs):
        key = f"kill{i}-{time.time()}"
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url, PASSWORD, key, str(lease)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "recorded"
        b = Replica(store, f"alive{i}", lease=lease)
        stop = asyncio.Event()
        rounds = asyncio.ensure_future(b.replicas.run(stop))
        await asyncio.sleep(lease)  # the holder renews meanwhile: nobody takes it
        assert not b.room.chat.shown
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        kill = time.monotonic()
        while not b.room.chat.shown:
            await asyncio.sleep(0.01)
        took.append(time.monotonic() - kill)
        stop.set()
        await rounds
        b.audit.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--commands", type=int, default=300)
    args = parser.parse_args()
    become_subreaper()
    workdir = Path(tempfile.mkdtemp(prefix="deskbot-store-ab-"))
    pg = Postgres(Path(tempfile.mkdtemp(prefix="deskbot-bench-pg-"))).start()
    import os

    os.environ[PASSWORD_ENV] = PASSWORD
    sipp, port, _ = start_sipp(workdir, trace_msg=False)
    try:
        base = write_config(workdir, port, args.phones, 50)
        url = pg.database()
        configs = {"sqlite": base, "postgresql": with_store(base, url)}
        one: dict[str, list[float]] = {k: [] for k in configs}
        many: dict[str, list[float]] = {k: [] for k in configs}
        for cfg in configs.values():  # warm up: schema, caches
            run_send(cfg, "10000")
        for _ in range(args.runs):
            for name, cfg in configs.items():
                one[name].append(run_send(cfg, "10000")[0])
                many[name].append(run_send(cfg, "@all")[0])
        print(f"deskbot send, whole process, {args.runs} runs each, medians:")
        cost = {}
        for name in configs:
            cost[name] = statistics.median(many[name]) - statistics.median(one[name])
            print(
                f"  {name:10} 1 phone {statistics.median(one[name]):.3f} s,"
                f" {args.phones} phones {statistics.median(many[name]):.3f} s,"
                f" cost of the broadcast {cost[name]:.3f} s"
            )
        print(f"  broadcast cost PostgreSQL / SQLite: {cost['postgresql'] / cost['sqlite']:.2f}x")

        from deskbot.store.audit import AuditLog
        from deskbot.store.postgres import PostgresLog

        stores = {
            "sqlite": AuditLog(workdir / "own.sqlite3", "bench"),
            "postgresql": PostgresLog(pg.database(), PASSWORD, "bench"),
        }
        print(
            f"a command's own part (relay + store, instant phone), {args.commands} commands"
            f" each, in {ROUNDS} interleaved rounds:"
        )
        own: dict[str, list[float]] = {name: [] for name in stores}
        for _ in range(ROUNDS):  # A, B, A, B...: both see the machine's load alike
            for name, store in stores.items():
                measured = asyncio.run(own_part(store, max(1, args.commands // ROUNDS)))
                if not own[name]:  # the first ones warm up
                    measured = measured[min(10, len(measured) // 2) :]
                own[name] += measured
        for name, store in stores.items():
            times = own[name]
            print(
                f"  {name:10} median {statistics.median(times):.2f} ms,"
                f" p95 {pct(times, 0.95):.2f} ms"
            )
            store.close()
        took = asyncio.run(takeover(pg.database(), 5))
        print(
            "take-over after the hold expired (lease 2 s): median"
            f" {statistics.median(took):.2f} s, max {max(took):.2f} s"
        )
        dead = asyncio.run(killed(pg.database(), args.runs))
        print(
            f"take-over after a SIGKILL (lease 2 s), {args.runs} runs: median"
            f" {statistics.median(dead):.2f} s, max {max(dead):.2f} s (target: lease + 5 s)"
        )
    finally:
        sipp.terminate()
        sipp.wait()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
