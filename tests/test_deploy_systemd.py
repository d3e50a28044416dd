"""deploy/systemd/: the unit files verify, score well, and deskbot works inside their sandbox.

systemd is not PID 1 here, so the sandbox test rebuilds the unit's file-system view, user
and capability limits by hand (tests/unit_sandbox.sh) and checks the parts it cannot
enforce (the system-call filter, the socket families) against strace's record of a real
`deskbot send` to a SIPp phone, taken from the unit file's own lines.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HERE, require, write_config

UNITS = HERE.parent / "deploy" / "systemd"
DESKBOT = Path(sys.executable).parent / "deskbot"
NOBODY = 65534


def unit_copy(tmp_path: Path, name: str) -> Path:
    """The unit with ExecStart at this venv's deskbot (verify checks that the binary exists)."""
    text = (UNITS / name).read_text().replace("/opt/deskbot/bin/deskbot", str(DESKBOT))
    path = tmp_path / name
    path.write_text(text)
    return path


def settings(name: str) -> dict[str, list[str]]:
    """The unit's [Service] lines as key -> values, in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in (UNITS / name).read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("systemd-analyze"), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("name", ["deskbot.service", "deskbot-edge@.service"])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, name):
    path = unit_copy(tmp_path, name)
    if "@" in name:  # a template verifies as one of its instances
        path = path.rename(tmp_path / name.replace("@", "@berlin"))
    result = analyze("verify", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == ""


@pytest.mark.parametrize("name", ["deskbot.service", "deskbot-edge@.service"])
def test_the_unit_sandbox_scores_3_or_better(tmp_path, name):
    result = analyze("security", "--offline=true", "--no-pager", str(unit_copy(tmp_path, name)))
    [score] = re.findall(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert float(score) <= 3.0, result.stdout


def test_both_units_share_one_sandbox_and_reload_the_way_each_process_can():
    run, edge = settings("deskbot.service"), settings("deskbot-edge@.service")
    differ = {"ExecStart", "ExecReload", "EnvironmentFile", "StateDirectory", "WorkingDirectory"}
    assert {k: v for k, v in run.items() if k not in differ} == {
        k: v for k, v in edge.items() if k not in differ
    }
    assert run["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # deskbot run reloads on SIGHUP
    assert run["DynamicUser"] == ["yes"] and run["StateDirectory"] == ["deskbot"]
    assert run["RestartPreventExitStatus"] == ["2"]  # a broken config is not retried forever
    assert "ExecReload" not in edge  # an edge has nothing to reload, and SIGHUP would end it
    assert edge["ExecStart"] == ["/opt/deskbot/bin/deskbot edge -c /etc/deskbot/edge-%i.toml"]


def syscall_group(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """The system calls of a systemd group like @system-service, nested groups expanded."""
    out = analyze("syscall-filter", name).stdout.splitlines()[1:]
    calls: set[str] = set()
    for line in (entry.strip() for entry in out):
        if line.startswith("@") and line not in seen:
            calls |= syscall_group(line, seen | {name})
        elif line and not line.startswith("#"):
            calls.add(line)
    return calls


def allowed_syscalls(unit: dict[str, list[str]]) -> set[str]:
    """What the unit's SystemCallFilter= lines let through (an allow list, then ~ denials)."""
    allowed: set[str] = set()
    for line in unit["SystemCallFilter"]:
        deny = line.startswith("~")
        calls: set[str] = set()
        for name in line.lstrip("~").split():
            calls |= syscall_group(name) if name.startswith("@") else {name}
        allowed = allowed - calls if deny else allowed | calls
    return allowed


CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = 3.0
[audit]
path = "/var/lib/deskbot/deskbot.sqlite3"
[phones.486]
uri = "{uri}"
label = "Reception"
"""


def test_deskbot_send_reaches_a_sipp_phone_inside_the_units_sandbox(sipp, tmp_path):
    unit = settings("deskbot.service")
    phone = sipp(200)
    state = Path(f"/tmp/deskbot-unit-{os.getpid()}-{tmp_path.name}")  # nobody must reach it
    state.mkdir(mode=0o700)
    try:
        os.chown(state, NOBODY, NOBODY)
        cfg = write_config(state / "config.toml", CONFIG.format(uri=phone.uri()))
        os.chown(cfg, NOBODY, NOBODY)
        env = dict(e.split("=", 1) for line in unit["Environment"] for e in line.split())
        # what the unit's empty /tmp and homes would hide: a pyenv Python, this checkout and
        # its venv (CI clones anywhere); an installed unit runs from /opt instead
        masked = ("/tmp", "/var/tmp", "/root", "/home")
        wanted = [
            Path(sys.base_prefix).resolve(),
            HERE.parent.resolve(),
            Path(sys.prefix).resolve(),
        ]
        kept: list[Path] = []
        for folder in wanted:
            hidden = any(folder.is_relative_to(m) for m in masked)
            if hidden and not any(folder.is_relative_to(k) for k in kept):
                kept = [k for k in kept if not k.is_relative_to(folder)] + [folder]
        keep = ":".join(map(str, kept))
        command = [require("unshare"), "-m", str(HERE / "unit_sandbox.sh"), str(state), keep]
        command += [require("strace"), "-f", "-qq", "-o", "/var/lib/deskbot/trace"]
        command += [str(DESKBOT), "send", "-c", "/var/lib/deskbot/config.toml", "486", "hi"]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("486\tReception\t200 OK\t")
        [message] = phone.wait_received(1)
        assert message.body == b"hi"

        audit = state / "deskbot.sqlite3"  # written by the unit's user, private by UMask=
        assert audit.stat().st_uid == NOBODY
        assert stat.S_IMODE(audit.stat().st_mode) == 0o600
        with sqlite3.connect(audit) as db:
            assert db.execute("select count(*) from deliveries").fetchone()[0] == 1

        trace = (state / "trace").read_text(errors="replace")
        used = set(re.findall(r"^\d+ +(?:<\.\.\. )?([a-z0-9_]+)\(", trace, re.M))
        assert "socket" in used and "execve" in used  # the worker is a child process
        assert used - allowed_syscalls(unit) == set()
        families = set(re.findall(r"socket\((AF_[A-Z0-9]+)", trace))
        assert families and families <= set(unit["RestrictAddressFamilies"][0].split())
    finally:
        shutil.rmtree(state, ignore_errors=True)
