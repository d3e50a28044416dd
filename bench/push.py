"""Broadcast to 1,000 Poly phones (HTTP push, Digest) beside 1,000 SIP MESSAGE phones.

Run by hand: ``.venv/bin/python bench/push.py --phones 1000 --runs 5``.
The SIP phones are one SIPp answering 200 to every MESSAGE; the Poly phones
are the tests' fake phones (tests/http_phones.py: a 401 challenge, then the
Digest-authenticated push, 200), one aiohttp server in this process, each
phone under its own path. Each run is one ``deskbot send --json @all`` as a
user runs it, the kinds in turn, with the defaults (``max_in_flight`` 50 for
both). A third kind mixes half of each, to see whether the SIP phones of a
mixed send take longer than in a SIP-only send (their median ``elapsed_ms``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from http_phones import HttpPhones  # noqa: E402  (the tests' fake Poly phones)

from bench.fanout import start_sipp  # noqa: E402

PASSWORD = "push-secret"


def write_config(workdir: Path, name: str, phones: list[tuple[str, str]]) -> Path:
    """phones: (format, address): a SIP URI for "message", an http:// address for Poly."""
    lines = [
        "[sip]",
        'listen = "127.0.0.1:0"',
        "timeout = 5.0",
        "[audit]",
        f'path = "{workdir / (name + ".sqlite3")}"',
        "[push]",
        'username = "deskbot"',
        'password_env = "DESKBOT_PUSH_PASSWORD"',
    ]
    members = []
    for i, (fmt, where) in enumerate(phones):
        ext = str(10000 + i)
        members.append(ext)
        if fmt == "message":
            lines += [f"[phones.{ext}]", f'uri = "sip:{ext}@{where}"']
        else:
            lines += [f"[phones.{ext}]", f'uri = "sip:{ext}@127.0.0.1:9"', f'format = "{fmt}"']
            lines.append(f'http = "{where}/{ext}"')
    lines += ["[groups.all]", f"members = {json.dumps(members)}"]
    path = workdir / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_send(cfg: Path) -> tuple[float, list[dict[str, object]]]:
    deskbot = str(Path(sys.executable).parent / "deskbot")
    started = time.perf_counter()
    result = subprocess.run(
        [deskbot, "send", "-c", str(cfg), "--json", "@all", "bench"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"DESKBOT_PUSH_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"},
    )
    elapsed = time.perf_counter() - started
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    if result.returncode != 0:
        raise SystemExit(f"send {cfg.name} failed ({result.returncode}): {result.stderr[-500:]}")
    return elapsed, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sipp, port, _ = start_sipp(workdir, trace_msg=False)
        http = HttpPhones(password=PASSWORD).start()
        try:
            sip_at, poly_at = f"127.0.0.1:{port}", f"http://127.0.0.1:{http.port}"
            n = args.phones
            configs = {
                "sip": write_config(workdir, "sip", [("message", sip_at)] * n),
                "poly": write_config(workdir, "poly", [("poly-push", poly_at)] * n),
                "mixed": write_config(
                    workdir,
                    "mixed",
                    [("message", sip_at)] * (n // 2) + [("poly-push", poly_at)] * (n - n // 2),
                ),
            }
            walls: dict[str, list[float]] = {k: [] for k in configs}
            sip_ms: dict[str, list[float]] = {"sip": [], "mixed": []}
            for _ in range(args.runs):
                for kind, cfg in configs.items():
                    wall, rows = run_send(cfg)
                    walls[kind].append(wall)
                    if kind in sip_ms:
                        sip_rows = [r for r in rows if str(r["uri"]).startswith("sip:")]
                        sip_ms[kind].append(
                            statistics.median(float(str(r["elapsed_ms"])) for r in sip_rows)
                        )
            print(f"{n} phones, {args.runs} runs each, in turn; wall of `deskbot send @all`:")
            for kind, values in walls.items():
                print(
                    f"  {kind:6} median {statistics.median(values):.2f} s "
                    f"(min {min(values):.2f}, max {max(values):.2f})"
                )
            ratio = statistics.median(walls["poly"]) / statistics.median(walls["sip"])
            print(f"  poly / sip: {ratio:.2f}")
            for kind, values in sip_ms.items():
                print(f"  SIP phones' median elapsed_ms, {kind}: {statistics.median(values):.0f}")
            print(f"  HTTP requests the fake phones took: {http.requests}")
        finally:
            http.stop()
            sipp.kill()
            sipp.wait()


if __name__ == "__main__":
    main()
