"""Through a real PBX: Kamailio as registrar and stateful proxy, baresip phones behind it.

deskbot registers with digest auth and sends via the proxy; the phone's own
answer comes back through Kamailio, and an extension no phone registered gets
Kamailio's 404.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import Baresip, free_port, require, run_deskbot, wait_for, write_config
from peers import die_with_parent, listens, start_on_free_port

HERE = Path(__file__).parent


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[int]:
    """The PBX as the README asks it set up: deskbot's OPTIONS and NOTIFY unchallenged."""
    yield from run_kamailio(tmp_path, "REGISTER|MESSAGE")


@pytest.fixture
def strict_kamailio(tmp_path: Path) -> Iterator[int]:
    """A PBX that challenges every request deskbot sends, OPTIONS and NOTIFY too."""
    yield from run_kamailio(tmp_path, "REGISTER|MESSAGE|OPTIONS|NOTIFY")


def run_kamailio(tmp_path: Path, challenged: str) -> Iterator[int]:
    [modules] = glob.glob("/usr/lib/*/kamailio/modules/") or [""]
    text = (HERE / "kamailio" / "kamailio.cfg.in").read_text()
    cfg = tmp_path / "kamailio.cfg"
    log = tmp_path / "kamailio.log"
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        cfg.write_text(
            text.replace("@PORT@", str(port))
            .replace("@PASSWORD@", "s3cret")
            .replace("@MODULES@", modules)
            .replace("@CHALLENGED@", challenged)
        )
        started.append(
            subprocess.Popen(
                [
                    require("kamailio"),
                    "-f",
                    str(cfg),
                    "-DD",
                    "-E",
                    "-w",
                    str(tmp_path),
                    "-P",
                    str(tmp_path / "kamailio.pid"),
                    "-Y",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log.open("wb"),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        )
        return started[-1]

    port, proc = start_on_free_port(
        start,
        "Kamailio",
        lambda port: listens(started[-1], port, "udp"),
        lambda: log.read_text(errors="replace"),
        pick=free_port,
    )
    yield port
    os.killpg(proc.pid, signal.SIGKILL)  # Kamailio's forked workers too, not only its main
    proc.wait()
    wait_for(lambda: not in_session(proc.pid), timeout=5, what="every Kamailio process to exit")


def in_session(sid: int) -> list[int]:
    """Live processes of session `sid` (Kamailio forks its workers into it)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError):  # gone meanwhile
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


def pbx_config(tmp_path: Path, pbx_port: int) -> Path:
    return write_config(
        tmp_path / "deskbot.toml",
        f"""
        [sip]
        listen = "127.0.0.1:0"
        from_uri = "sip:deskbot@pbx.test"
        timeout = 2.0
        [sip.registrar]
        uri = "sip:127.0.0.1:{pbx_port}"
        username = "deskbot"
        password_env = "DESKBOT_SIP_PASSWORD"
        proxy = "sip:127.0.0.1:{pbx_port};lr"
        domain = "pbx.test"
        [audit]
        path = "{tmp_path / "audit.sqlite3"}"
        [phones.486]
        uri = "sip:486@pbx.test"
        label = "Reception"
        """,
    )


def test_the_phones_own_answer_comes_back_through_the_pbx(kamailio: int, tmp_path: Path):
    phone = Baresip(tmp_path, "486", registrar=f"127.0.0.1:{kamailio}")
    try:
        cfg = pbx_config(tmp_path, kamailio)
        result = run_deskbot(
            "send",
            "-c",
            str(cfg),
            "--json",
            "486,4711",
            "via the pbx",
            env={"DESKBOT_SIP_PASSWORD": "s3cret"},
        )
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [(r["target"], r["uri"], r["code"], r["reason"]) for r in rows] == [
            ("486", "sip:486@pbx.test", 200, "OK"),  # baresip's 200, relayed by Kamailio
            ("4711", "sip:4711@pbx.test", 404, "Not Found"),  # no phone registered as 4711
        ]
        assert result.returncode == 1
        assert "no phone registered as 4711" in rows[1]["hint"]
    finally:
        phone.stop()


def test_probe_and_infobox_notify_go_through_a_pbx_that_takes_them_unchallenged(
    kamailio: int, tmp_path: Path
):
    phone = Baresip(tmp_path, "486", registrar=f"127.0.0.1:{kamailio}")
    try:
        cfg = pbx_config(tmp_path, kamailio)
        env = {"DESKBOT_SIP_PASSWORD": "s3cret"}
        probed = run_deskbot("probe", "-c", str(cfg), "--json", "486,4711", env=env)
        rows = [json.loads(line) for line in probed.stdout.splitlines()]
        answers = [(r["target"], r["code"], r["reason"]) for r in rows]
        assert [a[:2] for a in answers] == [("486", 200), ("4711", 404)], (answers, probed.stderr)
        assert probed.returncode == 1
        # baresip is no Snom: its 481 to the Infobox NOTIFY comes back through Kamailio
        infobox = write_config(
            tmp_path / "infobox.toml",
            cfg.read_text().replace("[sip]", '[message]\nformat = "snom-infobox"\n[sip]', 1),
        )
        sent = run_deskbot("send", "-c", str(infobox), "--json", "486", "hi", env=env)
        [row] = [json.loads(line) for line in sent.stdout.splitlines()]
        assert (row["code"], row["reason"]) == (481, "Subscription Does Not Exist"), sent.stderr
    finally:
        phone.stop()


def test_a_wrong_pbx_password_is_reported_with_a_hint(kamailio: int, tmp_path: Path):
    cfg = pbx_config(tmp_path, kamailio)
    result = run_deskbot(
        "send", "-c", str(cfg), "--json", "486", "hi", env={"DESKBOT_SIP_PASSWORD": "wrong"}
    )
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1
    assert row["code"] in (401, 407)
    assert "check [sip.registrar] username and password" in row["hint"]


def test_a_pbx_that_challenges_probes_and_notify_gets_them_refused_with_the_fix_named(
    strict_kamailio: int, tmp_path: Path
):
    """deskbot answers a digest challenge for REGISTER and MESSAGE only (a pjsua limit):
    through a PBX that challenges OPTIONS and NOTIFY too, the text still arrives, and
    the probe and the Infobox NOTIFY say 407 and what to change on the PBX."""
    phone = Baresip(tmp_path, "486", registrar=f"127.0.0.1:{strict_kamailio}")
    try:
        cfg = pbx_config(tmp_path, strict_kamailio)
        env = {"DESKBOT_SIP_PASSWORD": "s3cret"}
        sent = run_deskbot("send", "-c", str(cfg), "--json", "486", "hi", env=env)
        [text] = [json.loads(line) for line in sent.stdout.splitlines()]
        assert (text["code"], text["outcome"], sent.returncode) == (200, "delivered", 0), sent
        probed = run_deskbot("probe", "-c", str(cfg), "--json", "486", env=env)
        infobox = write_config(
            tmp_path / "infobox.toml",
            cfg.read_text().replace("[sip]", '[message]\nformat = "snom-infobox"\n[sip]', 1),
        )
        notified = run_deskbot("send", "-c", str(infobox), "--json", "486", "hi", env=env)
        for result in (probed, notified):
            [row] = [json.loads(line) for line in result.stdout.splitlines()]
            assert result.returncode == 1, result
            assert (row["code"], row["reason"], row["outcome"]) == (
                407,
                "Proxy Authentication Required",
                "refused",
            )
            assert "let the PBX take OPTIONS and NOTIFY from deskbot's address" in row["hint"]
    finally:
        phone.stop()
