"""1,000 phones over 4 sites (4 edges over NATS JetStream) against 1,000 local phones.

Run by hand: ``.venv/bin/python bench/sites.py --runs 3``. One nats-server
with JetStream (tests/nats_server.py), one SIPp UAS per site and one for the
local phones, four `deskbot edge` processes; each run sends `@local` and
`@sites` with `deskbot send` in turn, so both see the same machine load.
Prints wall time and per-phone latency of each, the hop's cost, and the peak
RSS (VmHWM) of the front process and of each edge process and its SIP worker.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from nats_server import NatsServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench.fanout import pct, run_send, start_sipp  # noqa: E402

SITES = ("berlin", "lyon", "austin", "oslo")
DESKBOT = str(Path(sys.executable).parent / "deskbot")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def write_configs(workdir: Path, url: str, local_port: int, site_ports: list[int], n: int) -> Path:
    common = [
        "[sip]",
        'listen = "127.0.0.1:0"',
        "max_in_flight = 50",
        "[audit]",
        f'path = "{workdir}/audit.sqlite3"',
        "[health]",
        'listen = "127.0.0.1:0"',  # four edges on one host: each its own health port
        "[nats]",
        f'url = "{url}"',
    ]
    keys = ", ".join(f'{site} = "BENCH_KEY_{site.upper()}"' for site in SITES)
    lines = [*common, 'user = "front"', 'password_env = "BENCH_NATS_FRONT"']
    lines += ['key_env = "BENCH_KEY_BERLIN"', f"site_keys_env = {{ {keys} }}"]
    local, remote = [], []
    for i in range(n):
        ext = str(10000 + i)
        lines += [f"[phones.{ext}]", f'uri = "sip:{ext}@127.0.0.1:{local_port}"']
        local.append(ext)
    for i in range(n):
        ext, site = str(20000 + i), i % len(SITES)
        lines += [
            f"[phones.{ext}]",
            f'uri = "sip:{ext}@127.0.0.1:{site_ports[site]}"',
            f'site = "{SITES[site]}"',
        ]
        remote.append(ext)
    lines += ["[groups.local]", f"members = {json.dumps(local)}"]
    lines += ["[groups.sites]", f"members = {json.dumps(remote)}"]
    front = workdir / "front.toml"
    front.write_text("\n".join(lines) + "\n")
    for site in SITES:
        login = [f'user = "edge-{site}"', f'password_env = "BENCH_NATS_{site.upper()}"']
        edge = [*common, *login, f'key_env = "BENCH_KEY_{site.upper()}"', "[edge]"]
        edge.append(f'site = "{site}"')
        (workdir / f"edge-{site}.toml").write_text("\n".join(edge) + "\n")
    return front


def send(front: Path, target: str) -> tuple[float, list[float]]:
    """One whole `deskbot send` (exit 0: every phone answered 2xx); its time, per-phone ms."""
    elapsed, rows, _rss = run_send(front, target)
    return elapsed, [float(str(r["elapsed_ms"])) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        hub = NatsServer(workdir, sites=SITES).start()  # authentication on, per-site users
        os.environ["BENCH_NATS_FRONT"] = hub.password("front")
        for site in SITES:
            os.environ[f"BENCH_NATS_{site.upper()}"] = hub.password(f"edge-{site}")
            os.environ[f"BENCH_KEY_{site.upper()}"] = secrets.token_hex(32)
        sipps = []
        for i in range(1 + len(SITES)):  # the local phones' SIPp, then one per site
            (workdir / f"p{i}").mkdir()
            sipps.append(start_sipp(workdir / f"p{i}"))
        front = write_configs(
            workdir, hub.url, sipps[0][1], [port for _, port, _ in sipps[1:]], args.phones
        )
        edges = [
            subprocess.Popen(
                [DESKBOT, "edge", "-c", str(workdir / f"edge-{site}.toml")],
                stdout=(workdir / f"edge-{site}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            for site in SITES
        ]
        try:
            deadline = time.monotonic() + 30
            while not all(" ready (" in (workdir / f"edge-{s}.log").read_text() for s in SITES):
                if time.monotonic() > deadline:
                    raise SystemExit("the edges did not start")
                time.sleep(0.1)
            send(front, "@sites")  # warm-up: stream, consumers, claims bucket exist
            results: dict[str, list[tuple[float, list[float]]]] = {"@local": [], "@sites": []}
            for _ in range(args.runs):
                for target in ("@local", "@sites"):
                    results[target].append(send(front, target))
            for target, runs in results.items():
                walls = sorted(w for w, _ in runs)
                lat = [ms for _, ls in runs for ms in ls]
                print(
                    f"{target}: {args.phones} phones, wall median {walls[len(walls) // 2]:.3f} s "
                    f"({walls[0]:.3f}-{walls[-1]:.3f}); per phone p50 {pct(lat, 0.5):.1f} ms, "
                    f"p99 {pct(lat, 0.99):.1f} ms"
                )
            front_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"front: largest `deskbot send` process (or its SIP worker): {front_rss:.0f} MiB")
            for site, edge in zip(SITES, edges, strict=True):
                worker = children(edge.pid)
                shown = ", ".join(f"{peak_rss_mib(w):.0f}" for w in worker)
                print(f"edge {site}: {peak_rss_mib(edge.pid):.0f} MiB, its SIP worker {shown} MiB")
        finally:
            for edge in edges:
                edge.terminate()
            for edge in edges:
                edge.wait(20)
            for proc, _, _ in sipps:
                proc.kill()
            hub.stop()


if __name__ == "__main__":
    main()
