"""What a new admin runs into: refusals that say what to do, the Makefile, the package metadata."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

from deskbot.directory import loader
from deskbot.relay.relay import Relay
from deskbot.relay.values import Answer, ChatUser, Policy, Request
from deskbot.senders.recording import RecordingSender
from deskbot.settings.load import parse

ROOT = Path(__file__).parent.parent

DIRECTORY = """
[access]
senders = ["alice"]
[phones.486]
uri = "sip:486@10.0.0.86"
[people.alice]
phone = "486"
slack = "U0ALICE"
[people.bob]
phone = "486"
"""


def test_a_sender_who_is_not_allowed_is_told_both_entries_an_admin_must_add():
    s = parse(tomllib.loads(DIRECTORY), Path("x"), {}).settings
    relay = Relay(RecordingSender(), loader.from_settings(s), Policy.from_settings(s))
    answer = relay.prepare(Request(ChatUser("slack", "U0MALLORY"), "486 let me in"))
    assert isinstance(answer, Answer) and answer.error
    assert answer.text == (
        "you are not allowed to send to desk phones: ask an admin to add you to [people] "
        "with your Slack id U0MALLORY, and to [access] senders"
    )
    answer = relay.prepare(Request(ChatUser("matrix", "@m:example.com"), "486 hi"))
    assert isinstance(answer, Answer) and "with your Matrix id @m:example.com," in answer.text


def make_dry_run(target: str, tmp_path: Path) -> str:
    """What `make TARGET` would run on a fresh checkout (no venv yet)."""
    checkout = tmp_path / "checkout"
    checkout.mkdir(exist_ok=True)
    shutil.copy(ROOT / "Makefile", checkout / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    result = subprocess.run(
        ["make", "-n", "-C", str(checkout), target, "PYTHON=python3"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_demo_installs_the_runtime_only_and_test_and_lint_install_the_test_extras(tmp_path):
    demo = make_dry_run("demo", tmp_path)
    assert "pip install -q -e ." in demo and "[test]" not in demo
    assert "deskbot demo" in demo
    for target in ("test", "lint"):
        assert "pip install -q -e '.[test]'" in make_dry_run(target, tmp_path)


def test_the_license_is_an_spdx_expression_that_setuptools_reads_without_a_warning():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "GPL-2.0-or-later"
    assert pyproject["project"]["license-files"] == ["COPYING"]
    # PEP 639 license expressions need setuptools 77
    assert "setuptools>=77" in pyproject["build-system"]["requires"]


def test_the_wheel_builds_without_a_warning_and_carries_the_license(tmp_path):
    """Build the wheel with the backend pyproject.toml names, from a copy of the sources."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "COPYING"):
        shutil.copy(ROOT / name, source)
    shutil.copytree(
        ROOT / "deskbot", source / "deskbot", ignore=shutil.ignore_patterns("__pycache__")
    )
    build = "import setuptools.build_meta as b; print(b.build_wheel('../out'))"
    built = subprocess.run(
        [sys.executable, "-W", "always", "-c", build],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    output = built.stdout + built.stderr
    assert "Warning" not in output and "deprecat" not in output.lower(), output[-3000:]
    wheel = tmp_path / "out" / built.stdout.split()[-1]
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read("deskbot-0.1.0.dist-info/METADATA").decode()
        assert "deskbot-0.1.0.dist-info/licenses/COPYING" in archive.namelist()
    assert "License-Expression: GPL-2.0-or-later" in metadata.splitlines()
    assert "License-File: COPYING" in metadata.splitlines()
