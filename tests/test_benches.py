"""Every benchmark in bench/ runs as docs/benchmarks.md says: a smoke run of each, tiny sizes.

The figures are not checked (they belong in docs/benchmarks.md); that each script
still starts its peers, measures and exits 0 is, so a bench cannot rot unseen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = {
    "fanout.py": ["--phones", "5", "--runs", "1", "--loop", "2", "--in-flight", "5"],
    "fanout_ab.py": ["--phones", "5", "--runs", "1", "--trees", str(ROOT)],
    "cpu_split.py": ["--phones", "5", "--runs", "1"],
    "single.py": ["--runs", "1"],
    "alerts.py": ["--alerts", "2", "--requests", "20", "--concurrency", "2"],
    "ldap_sync.py": ["--people", "20", "--groups", "3", "--runs", "1"],
    "sites.py": ["--phones", "5", "--runs", "1"],
    "matrix_roundtrip.py": ["--runs", "1", "--warmup", "0"],
    "matrix_load.py": ["--runs", "1"],
    "soak.py": ["--rounds", "1", "--gap", "0", "--phones", "5"],
    "push.py": ["--phones", "4", "--runs", "1"],
    "web.py": ["--runs", "2", "--people", "2", "--idle", "1"],
    "store_ab.py": ["--phones", "5", "--runs", "1", "--commands", "3"],
    "confirm.py": ["--runs", "2"],
    "worker_alone.py": ["--phones", "5", "--runs", "1"],
}


def test_every_bench_script_has_a_smoke_run():
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")} - {"__init__.py", "installs.py"}
    assert scripts == set(SMOKE)  # installs.py is a helper of fanout_ab.py and single.py


@pytest.mark.parametrize("script", list(SMOKE))
def test_the_bench_runs_and_reports(script):
    ran = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *SMOKE[script]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert ran.returncode == 0, f"{script}: {ran.stderr[-3000:]}"
    assert ran.stdout.strip(), f"{script} printed no figures"
