"""The SIP worker process under supervision: crashes, restarts, shutdown, orphans."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil
import pytest
from conftest import until, wait_for, write_config
from peers import die_with_parent

from deskbot.directory.snapshot import Phone
from deskbot.senders import fair
from deskbot.senders.base import Cause, Outcome
from deskbot.senders.sip.agent import AgentError, SipAgent
from deskbot.settings.schema import Registrar, Sip


def to(uri: str) -> Phone:
    return Phone("486", uri)


def worker_pids() -> set[int]:
    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "deskbot.senders.sip.worker" in cmd and proc.status() != psutil.STATUS_ZOMBIE:
            found.add(proc.pid)
    return found


async def fan_out(agent: SipAgent, phones: list[Phone], text: str, how: str) -> list:
    """One command's sends: a ``send`` task per phone, or all in one ``send_all`` (the relay's
    way with the SIP agent), whose callback must see each phone's answer exactly once."""
    if how == "each":
        return list(await asyncio.gather(*(agent.send(p, text) for p in phones)))
    seen: list[int] = []
    results = await agent.send_all([(p, text, None) for p in phones], lambda i, d: seen.append(i))
    assert sorted(seen) == list(range(len(phones)))
    return results


@pytest.mark.parametrize(
    ("sig", "how"), [(signal.SIGKILL, "each"), (signal.SIGABRT, "each"), (signal.SIGKILL, "all")]
)
async def test_worker_death_mid_group_send_reports_every_phone_and_recovers(sipp, sig, how):
    silent, ok = sipp(silent=True), sipp(200)
    agent = SipAgent(Sip(listen="127.0.0.1:0", timeout=5.0))
    await agent.start()
    try:
        first_pid = agent.state.pid
        phones = [to(silent.uri(str(400 + i))) for i in range(20)]
        sends = asyncio.create_task(fan_out(agent, phones, "drill", how))
        await asyncio.to_thread(silent.wait_received, 20)
        os.kill(first_pid, sig)
        results = await asyncio.wait_for(sends, 3)
        assert {d.outcome for d in results} == {Outcome.UNCONFIRMED}
        assert all("Not confirmed" in d.reason for d in results)
        delivery = await asyncio.wait_for(agent.send(to(ok.uri()), "after the crash"), 5)
        assert delivery.code == 200
        assert agent.state.restarts == 1 and agent.state.pid != first_pid
        assert first_pid not in worker_pids()  # reaped, not a zombie
    finally:
        await agent.close()


async def test_a_worker_that_dies_at_start_up_three_times_gives_a_clear_error():
    agent = SipAgent(
        Sip(listen="127.0.0.1:0"), worker_command=(sys.executable, "-c", "import os; os.abort()")
    )
    started = time.monotonic()
    with pytest.raises(AgentError, match="died at start-up 3 times in a row"):
        await agent.start()
    assert time.monotonic() - started < 30  # only a hang: no retrying without end


async def test_a_port_in_use_is_reported_without_retrying(monkeypatch):
    from deskbot.senders.sip import agent as agent_module

    first = SipAgent(Sip(listen="127.0.0.1:0"))
    await first.start()
    spawned = []
    real_spawn = agent_module.spawn_worker

    async def counted(*args, **kwargs):
        spawned.append(1)
        return await real_spawn(*args, **kwargs)

    monkeypatch.setattr(agent_module, "spawn_worker", counted)
    try:
        second = SipAgent(Sip(listen=f"127.0.0.1:{first.state.port}"))
        with pytest.raises(AgentError, match="ddress already in use"):
            await second.start()
        assert second.state.restarts == 0 and len(spawned) == 1  # one worker, never restarted
        assert second.health().alive is False
    finally:
        await first.close()


def send_to_silent_phone(silent, tmp_path: Path, *flags: str) -> subprocess.Popen[str]:
    """`deskbot send` to a phone that never answers; returns once the MESSAGE is out."""
    cfg = write_config(
        tmp_path / "d.toml",
        f"""
        [sip]
        listen = "127.0.0.1:0"
        timeout = 20.0
        [audit]
        path = "{tmp_path}/a.sqlite3"
        [phones.486]
        uri = "{silent.uri()}"
        """,
    )
    deskbot = str(Path(sys.executable).parent / "deskbot")
    proc = subprocess.Popen(
        [deskbot, "send", "-c", str(cfg), *flags, "486", "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    silent.wait_received(1)
    return proc


def running(pids: Iterable[int]) -> list[int]:
    """The processes that still run (a zombie has ended: its new parent reaps it)."""
    alive = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    return alive


def test_sigterm_during_a_send_reports_the_phone_and_leaves_no_worker(sipp, tmp_path: Path):
    silent = sipp(silent=True)
    proc = send_to_silent_phone(silent, tmp_path, "--json")
    workers = {p.pid for p in psutil.Process(proc.pid).children()}
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 3, err
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row["code"] == 0 and row["outcome"] == "unconfirmed"
    assert "stopped before the phone answered" in row["reason"]
    assert workers
    # the one-shot command kills its worker and leaves without waiting for it to be gone
    wait_for(lambda: not running(workers), timeout=5, what="the killed worker to be gone")


def test_parent_killed_with_sigkill_leaves_no_worker_and_the_command_is_in_the_audit_log(
    sipp, tmp_path: Path
):
    silent = sipp(silent=True)
    proc = send_to_silent_phone(silent, tmp_path)
    workers = [p.pid for p in psutil.Process(proc.pid).children()]
    assert workers
    proc.kill()
    proc.wait()
    # the message went out, so the command was recorded before it, and survives the kill
    db = sqlite3.connect(tmp_path / "a.sqlite3")
    assert db.execute("SELECT chat, targets, text_chars, phones FROM commands").fetchall() == [
        ("shell", "486", 2, 1)
    ]
    wait_for(lambda: not running(workers), timeout=5, what="the orphaned worker to exit")


async def test_registration_is_redone_after_a_worker_crash(sipp):
    pbx = sipp(pbx_password="s3cret")
    registrar = Registrar(uri=f"sip:127.0.0.1:{pbx.port}", username="deskbot", password_env="P")
    agent = SipAgent(Sip(listen="127.0.0.1:0", timeout=2.0, registrar=registrar), "s3cret")
    await agent.start()
    try:
        assert (await agent.wait_registration(5))["active"] is True
        os.kill(agent.state.pid, signal.SIGKILL)
        await until(lambda: agent.state.restarts == 1, what="the restart")
        registration = await agent.wait_registration(5)
        assert registration == {"code": 200, "reason": "OK", "active": True}
    finally:
        await agent.close()


async def test_a_worker_that_cannot_come_back_leaves_sends_a_clear_answer(sipp, tmp_path: Path):
    phone = sipp(200)
    broken = tmp_path / "broken"
    # the real worker, until the marker file says its machine went bad
    command = (
        sys.executable,
        "-c",
        f"import os, runpy; os.path.exists({str(broken)!r}) and os.abort(); "
        "runpy.run_module('deskbot.senders.sip.worker', run_name='__main__')",
    )
    agent = SipAgent(Sip(listen="127.0.0.1:0", timeout=2.0), worker_command=command)
    await agent.start()
    try:
        assert (await agent.send(to(phone.uri()), "before")).code == 200
        broken.touch()
        os.kill(agent.state.pid, signal.SIGKILL)
        await until(lambda: agent.state.failed, what="the agent to give up")
        assert "died at start-up 3 times in a row" in agent.state.failed
        delivery = await agent.send(to(phone.uri()), "after")
        assert (delivery.code, delivery.cause) == (503, Cause.AGENT_DOWN)
        assert delivery.reason.startswith("SIP agent is down")
    finally:
        await agent.close()


async def test_sends_a_hung_worker_never_answers_are_given_up_oldest_first(monkeypatch):
    """pjsip answers 408 itself; if the worker hangs, one timer gives every send up in turn."""
    monkeypatch.setattr("deskbot.senders.sip.agent.SAFETY_NET", 0.3)
    hung = (  # says it is ready, then reads every line and answers none
        sys.executable,
        "-c",
        "import json, os, sys; sys.stdin.readline(); "
        "print(json.dumps({'op': 'ready', 'v': 2, 'port': 5, 'pid': os.getpid()}), flush=True); "
        "[None for _ in sys.stdin]",
    )
    agent = SipAgent(Sip(listen="127.0.0.1:0", timeout=0.5), worker_command=hung)
    await agent.start()
    try:
        first = asyncio.create_task(agent.send(to("sip:486@127.0.0.1:9"), "one"))
        await asyncio.sleep(0.4)  # the second send is asked for later: it is given up later
        second = asyncio.create_task(agent.send(to("sip:487@127.0.0.1:9"), "two"))
        async with asyncio.timeout(5):  # a sweep that is not scheduled again hangs here
            one = await first
            assert (one.code, one.outcome) == (408, Outcome.NO_ANSWER)
            assert one.reason == "Request Timeout (no answer from the SIP agent)"
            assert not second.done()
            two = await second
        assert two.code == 408 and 750 < one.elapsed_ms < 2000 and two.elapsed_ms > 750
        assert agent.in_flight == 0
    finally:
        await agent.close()


@pytest.mark.parametrize("how", ["each", "all"])
async def test_a_silent_group_does_not_hold_up_another_commands_one_phone_send(sipp, how):
    silent, ok = sipp(silent=True), sipp(200)
    agent = SipAgent(Sip(listen="127.0.0.1:0", timeout=1.0, max_in_flight=50))

    async def command(name: str, phones: list[Phone]) -> list:
        fair.COMMAND.set(name)  # what the relay sets for each fan-out
        return await fan_out(agent, phones, "drill", how)

    async with agent:
        group = asyncio.create_task(
            command("group", [to(silent.uri(str(400 + i))) for i in range(60)])
        )
        # alone, the group fills every slot
        await until(lambda: agent.in_flight == 50, what="the group to hold every slot")
        [single] = await asyncio.wait_for(command("single", [to(ok.uri())]), 0.9)
        assert single.code == 200 and not group.done()  # answered while the group waits
        results = await group
    assert {d.code for d in results} == {408}
    # the 10 sends that waited for a slot count the wait: about two timeouts, not one
    waited = sorted(d.elapsed_ms for d in results)
    assert min(waited[-10:]) > 1800 and max(waited[:50]) < 1800


async def test_a_lone_command_takes_every_slot_and_the_share_applies_once_others_wait():
    slots = fair.FairSlots(10)  # a reserve of 2 beside the 10; 8 each while others wait
    holding: dict[str, list] = {"a": [], "b": []}

    async def take(name: str) -> None:
        fair.COMMAND.set(name)
        holding[name].append(await slots.acquire())

    a = [asyncio.create_task(take("a")) for _ in range(14)]
    await until(lambda: len(holding["a"]) == 10, what="a to fill every slot")
    await asyncio.sleep(0)
    assert len(holding["a"]) == 10 and len(slots.queues["a"]) == 4  # the reserve is not a's
    b = [asyncio.create_task(take("b")) for _ in range(5)]
    await until(lambda: len(holding["b"]) == 2, what="b to take the reserve at once")
    # a frees 4: the first two only bring the 12 in use back to 10, the next go in turn
    for _ in range(4):
        slots.release(holding["a"].pop())
    await asyncio.sleep(0)
    assert (len(holding["a"]), len(holding["b"])) == (7, 3)
    for name in "aaab":  # while both wait, a gets a freed slot only below its share of 8
        slots.release(holding[name].pop())
        await asyncio.sleep(0)
        assert len(holding["a"]) <= 8 and slots.used <= 10
    assert (len(holding["a"]), len(holding["b"])) == (6, 4)  # the 4 freed went a, b, a, b
    for task in a + b:
        task.cancel()


async def test_freed_slots_go_to_waiting_commands_in_turn():
    slots = fair.FairSlots(2, reserve=0)
    order: list[str] = []
    release = asyncio.Event()

    async def one(name: str) -> None:
        fair.COMMAND.set(name)
        key = await slots.acquire()
        try:
            order.append(name)
            await release.wait()
        finally:
            slots.release(key)

    tasks = [asyncio.create_task(one("a")) for _ in range(4)]
    await until(lambda: len(order) == 2, what="a's first two sends")
    tasks += [asyncio.create_task(one("b")) for _ in range(2)]
    await until(lambda: len(slots.queues) == 2, what="both commands waiting")
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["a", "a", "a", "b", "a", "b"]  # alternating once slots come free


async def test_a_send_cancelled_while_it_waits_for_a_slot_takes_none(sipp):
    silent, ok = sipp(silent=True), sipp(200)
    agent = SipAgent(Sip(listen="127.0.0.1:0", timeout=1.0, max_in_flight=2))
    async with agent:
        fair.COMMAND.set("group")
        held = [
            asyncio.create_task(agent.send(to(silent.uri(str(400 + i))), "x")) for i in range(2)
        ]
        await until(lambda: agent.in_flight == 2, what="both slots held")
        gone = asyncio.create_task(agent.send(to(ok.uri("401")), "never sent"))
        after = asyncio.create_task(agent.send(to(ok.uri("402")), "sent"))
        queued = agent._slots.queues  # both wait: the reserve is for other commands
        await until(lambda: len(queued.get("group", ())) == 2, what="both sends queued")
        assert agent.in_flight == 2
        gone.cancel()
        assert (await after).code == 200  # once a silent send timed out
        assert {d.code for d in await asyncio.gather(*held)} == {408}
        assert gone.cancelled() and agent.in_flight == 0
    assert [m.body for m in ok.received()] == [b"sent"]  # the cancelled one never left


async def test_a_fan_out_cancelled_while_it_waits_for_slots_sends_no_more(sipp):
    silent, ok = sipp(silent=True), sipp(200)
    agent = SipAgent(Sip(listen="127.0.0.1:0", timeout=1.0, max_in_flight=2))
    async with agent:
        fair.COMMAND.set("group")
        phones = [to(silent.uri("400")), to(silent.uri("401"))]
        phones += [to(ok.uri(str(402 + i))) for i in range(3)]
        answered: list[int] = []
        group = asyncio.create_task(
            agent.send_all(
                [(p, "never sent", None) for p in phones], lambda i, d: answered.append(i)
            )
        )
        await until(lambda: agent.in_flight == 2, what="both slots held")
        group.cancel()
        with pytest.raises(asyncio.CancelledError):
            await group
        await until(lambda: agent.in_flight == 0, what="the silent sends to time out")
        fair.COMMAND.set("next")  # every slot is back: the next command's three leave at once
        results = await fan_out(agent, [to(ok.uri(str(410 + i))) for i in range(3)], "sent", "all")
        assert [d.code for d in results] == [200, 200, 200]
    assert answered == []  # a cancelled fan-out reports nothing more
    assert [m.body for m in ok.received()] == [b"sent"] * 3  # its queued sends never left
