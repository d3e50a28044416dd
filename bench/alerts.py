"""Alert to desk phone: Alertmanager -> `deskbot run` -> phone latency, and /v1/send per second.

Run by hand: ``.venv/bin/python bench/alerts.py --alerts 20 --requests 2000``.

It starts a simulated phone (deskbot's phonesim, in this process, so the
arrival time is exact), ``deskbot run`` with ``[api]`` only, and a real
Alertmanager (``group_wait: 0s``). Latency: from the POST of a new alert to
Alertmanager's ``/api/v2/alerts`` until the text is on the phone; each alert
has its own name, so it is a new group notified at once. Throughput:
``POST /v1/send`` to that one phone from ``--concurrency`` clients, each
waiting for the phone's answer in the response, as a script would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from alertmanager import Alertmanager  # noqa: E402  (the tests' Alertmanager set-up)

from deskbot.senders.sip.phonesim import SimulatedPhone  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = 2.0
[health]
listen = "127.0.0.1:0"
[audit]
path = "{tmp}/audit.sqlite3"
[limits]
per_sender_per_minute = 1000000
per_phone_per_minute = 1000000
[phones.486]
uri = "{phone}"
[api]
listen = "127.0.0.1:{api}"
[api.clients.bench]
token_env = "BENCH_TOKEN"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.001)


async def main(args: argparse.Namespace) -> None:
    arrivals: dict[str, float] = {}
    phone = await SimulatedPhone(
        "486", on_display=lambda _p, text: arrivals.setdefault(text, time.perf_counter())
    ).start()
    work = Path(tempfile.mkdtemp(prefix="deskbot-bench-alerts-"))
    api_port = free_port()
    config = work / "deskbot.toml"
    config.write_text(CONFIG.format(tmp=work, phone=phone.uri(), api=api_port))
    log = work / "deskbot.log"
    deskbot = subprocess.Popen(
        [str(Path(sys.executable).parent / "deskbot"), "run", "-c", str(config)],
        env={**os.environ, "BENCH_TOKEN": TOKEN},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    am = None
    try:
        await wait_until(lambda: "deskbot running" in log.read_text(), 30, "deskbot to start")
        url = f"http://127.0.0.1:{api_port}/v1/alertmanager?targets=486"
        am = Alertmanager(work, url, TOKEN)
        async with aiohttp.ClientSession() as http:
            latencies = []
            for i in range(args.alerts + 2):  # the first two warm up
                name = f"BenchAlert{i}"
                alert = {
                    "labels": {"alertname": name},
                    "annotations": {"summary": "bench"},
                    "startsAt": datetime.now(UTC).isoformat(),
                }
                started = time.perf_counter()
                async with http.post(f"{am.base}/api/v2/alerts", json=[alert]) as resp:
                    assert resp.status == 200, resp.status
                text = f"bench: FIRING: {name}: bench"
                await wait_until(lambda t=text: t in arrivals, 10, f"{name} on the phone")
                if i >= 2:
                    latencies.append((arrivals[text] - started) * 1000)
            print(
                f"alert -> phone over {len(latencies)} alerts: median "
                f"{statistics.median(latencies):.1f} ms, p95 {pct(latencies, 0.95):.1f} ms, "
                f"min {min(latencies):.1f} ms, max {max(latencies):.1f} ms"
            )

            headers = {"Authorization": f"Bearer {TOKEN}"}
            send = f"http://127.0.0.1:{api_port}/v1/send"
            codes: dict[int, int] = {}
            elapsed: list[float] = []
            todo = iter(range(args.requests))

            async def client() -> None:
                for n in todo:
                    t0 = time.perf_counter()
                    body = {"targets": "486", "text": f"load {n}"}
                    async with http.post(send, json=body, headers=headers) as resp:
                        answer = await resp.json()
                        phone_code = answer["deliveries"][0]["code"] if resp.status == 200 else 0
                        codes[phone_code] = codes.get(phone_code, 0) + 1
                    elapsed.append((time.perf_counter() - t0) * 1000)

            t0 = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(args.concurrency)))
            took = time.perf_counter() - t0
            print(
                f"/v1/send to one phone, {args.requests} requests from {args.concurrency} "
                f"clients: {args.requests / took:.0f} requests/s; response median "
                f"{statistics.median(elapsed):.1f} ms, p99 {pct(elapsed, 0.99):.1f} ms; "
                f"phone answers {json.dumps(codes)}"
            )
    finally:
        if am is not None:
            am.stop()
        deskbot.send_signal(signal.SIGTERM)
        deskbot.wait(20)
        phone.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
