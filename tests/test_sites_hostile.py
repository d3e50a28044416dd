"""Sites under attack: whoever can reach the NATS server must not ring a phone or answer for one.

A real nats-server with authentication on and the README's per-site
permissions (tests/nats_server.py); the `intruder` user may publish and
subscribe anywhere, as a stolen login or a careless hub set-up allows.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest
import test_sites as sites
from conftest import run_deskbot, wait_for, write_config
from nats_server import NatsServer
from test_sites import KEYS, SITES, Edge, answers, configs, send, texts

from deskbot.senders.base import Cause, Delivery
from deskbot.senders.sites import seal, wire

nats_hub, nats_secrets, edges = sites.nats_hub, sites.nats_secrets, sites.edges  # the fixtures


class Intruder:
    """A NATS client of its own loop and thread, logged in as `intruder`."""

    def __init__(self, hub: NatsServer):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.captured: list[tuple[str, bytes]] = []  # (subject, data) of every job seen
        self.nc: Any = self.run(
            nats.connect(hub.url, user="intruder", password=hub.password("intruder"))
        )

    def run(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    def capture(self, subject: str, then: Callable[[Any], Awaitable[None]] | None = None) -> None:
        async def seen(msg: Any) -> None:
            self.captured.append((msg.subject, msg.data))
            if then is not None:
                await then(msg)

        self.run(self.nc.subscribe(subject, cb=seen))
        self.run(self.nc.flush())

    def answer_pings(self, site: str) -> None:
        """Pretend an edge of ``site`` is online."""

        async def pong(msg: Any) -> None:
            await msg.respond(b"intruder")

        self.run(self.nc.subscribe(wire.PING.format(site=site), cb=pong))
        self.run(self.nc.flush())

    def publish_job(self, site: str, data: bytes) -> None:
        headers = {"Nats-Msg-Id": f"intruder-{time.monotonic_ns()}"}
        js = self.nc.jetstream()
        self.run(js.publish(wire.SEND.format(site=site), data, headers=headers))

    def close(self) -> None:
        self.run(self.nc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def intruder(nats_hub: NatsServer) -> Iterator[Intruder]:
    client = Intruder(nats_hub)
    yield client
    client.close()


def job_record(data: bytes) -> dict[str, Any]:
    return json.loads(data.partition(b".")[2])


def test_a_captured_job_replayed_or_altered_never_rings_a_phone(
    tmp_path, nats_hub, sipp, edges, intruder
):
    berlin = sipp(200)
    front = configs(tmp_path, nats_hub.url, {"486": (berlin.uri("486"), "berlin")})
    edge = Edge(tmp_path / "edge-berlin.toml", "edge").wait_ready()
    edges.append(edge)
    intruder.capture(wire.SEND.format(site="berlin"))

    assert send(front, "486", "the real one").returncode == 0
    assert texts(berlin) == [b"the real one"]
    ((_, job),) = intruder.captured
    mac, _, _ = job.partition(b".")
    record = job_record(job)
    assert "the real one" in record["text"]  # the wire carries it: the MAC, not secrecy, guards it

    intruder.publish_job("berlin", job)  # replayed as captured
    for altered in (
        {**record, "text": "evacuate now"},  # another text under the captured MAC
        {**record, "uri": berlin.uri("999")},  # another phone
        {**record, "deadline": time.time() + 60},  # a later deadline
    ):
        intruder.publish_job("berlin", mac + b"." + json.dumps(altered).encode())
    forged = {**record, "id": "ab" * 16, "text": "evacuate now"}
    intruder.publish_job("berlin", seal.seal(seal.JOB, b"guessed" * 8, "berlin", forged))
    lyon_signed = wire.Job(
        "cd" * 16, "berlin", berlin.uri("486"), "from lyon", time.time() + 5, record["reply"]
    )
    intruder.publish_job("berlin", lyon_signed.encode(KEYS["lyon"].encode()))

    wait_for(lambda: edge.log().count("not sent again") == 1, 10, "the replay to be refused")
    wait_for(lambda: edge.log().count("a delivery refused, not sent") == 5, 10, "the refusals")
    assert texts(berlin) == [b"the real one"]
    assert send(front, "486", "still works").returncode == 0
    assert texts(berlin) == [b"the real one", b"still works"]
    assert "evacuate" not in edge.log()  # a refused text is not logged either


def test_forged_and_unbounded_answers_never_become_a_report_and_lose_no_other_row(
    tmp_path, nats_hub, sipp, intruder
):
    berlin, local = sipp(200), sipp(200)
    front = configs(
        tmp_path, nats_hub.url, {"486": (berlin.uri("486"), "berlin"), "487": (local.uri(), "")}
    )
    intruder.answer_pings("berlin")  # no real edge: only the intruder says it is online

    async def forge(msg: Any) -> None:
        record = job_record(msg.data)
        reply, job_id = record["reply"], record["id"]
        ok = Delivery("", 200, "OK", 1.0, Cause.ANSWERED)
        await intruder.nc.publish(reply, json.dumps({"id": job_id, "code": 200}).encode())
        await intruder.nc.publish(reply, b"0" * 64 + b"." + json.dumps(record).encode())
        lyon = KEYS["lyon"].encode()
        await intruder.nc.publish(reply, wire.encode_answer(lyon, "berlin", job_id, ok))
        await intruder.nc.publish(reply, wire.encode_answer(lyon, "lyon", job_id, ok))
        key = KEYS["berlin"].encode()  # even with the site's key: out of bounds is refused
        huge = seal.seal(
            seal.ANSWER,
            key,
            "berlin",
            {"id": job_id, "site": "berlin", "code": 10**20, "reason": "OK", "cause": "answered"},
        )
        await intruder.nc.publish(reply, huge)
        await intruder.nc.publish(reply, b"x" * (1 << 20))

    intruder.capture(wire.SEND.format(site="berlin"), then=forge)

    result = send(front, "486,487", "hello")

    got = answers(result)
    assert got["486"]["code"] == 503, got  # the intruder never took it: not sent
    assert got["486"]["reason"] == "site berlin's edges did not take it within 2 s: not sent"
    assert (got["487"]["code"], got["487"]["reason"]) == (200, "OK")
    assert texts(berlin) == []
    assert result.returncode == 3


def test_an_answer_reason_with_newlines_and_escapes_prints_one_line(
    tmp_path, nats_hub, sipp, intruder
):
    berlin = sipp(200)
    front = configs(tmp_path, nats_hub.url, {"486": (berlin.uri("486"), "berlin")})
    intruder.answer_pings("berlin")
    key = KEYS["berlin"].encode()  # a rogue edge of berlin: it holds berlin's key

    async def answer(msg: Any) -> None:
        record = job_record(msg.data)
        lie = Delivery("", 200, "OK\n487 200 OK 1 ms\x1b[2J\u202e", 1.0, Cause.ANSWERED)
        await intruder.nc.publish(
            record["reply"], wire.encode_answer(key, "berlin", record["id"], lie)
        )

    intruder.capture(wire.SEND.format(site="berlin"), then=answer)

    result = run_deskbot("send", "-c", str(front), "486", "hello")

    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert "\x1b" not in line and "\u202e" not in line
    assert line.startswith("486") and "OK 487 200 OK 1 ms" in line


def test_a_nats_table_without_a_login_or_a_key_is_refused_by_check_config_run_and_edge(tmp_path):
    body = """
        [sip]
        listen = "127.0.0.1:0"
        [nats]
        url = "nats://127.0.0.1:4222"
        [phones.486]
        uri = "sip:486@127.0.0.1"
        site = "berlin"
        """
    front = write_config(tmp_path / "front.toml", body)
    edge = write_config(tmp_path / "edge.toml", body + '[edge]\nsite = "berlin"\n')

    for command, path in (("check-config", front), ("run", front), ("edge", edge)):
        result = run_deskbot(command, "-c", str(path))
        assert result.returncode == 2, (command, result.stderr)
        problems = (result.stdout + result.stderr).splitlines()  # check-config: on stdout
        assert (
            f"{path}: nats: no login: give credentials_env, user with password_env, or "
            in (problems[0])
        )
        assert problems[1].startswith(f"{path}: nats.key_env: required: ")

    login = 'user = "front"\npassword_env = "PW"\nkey_env = "KEY"\n[phones.486]'
    short = write_config(tmp_path / "short.toml", body.replace("[phones.486]", login))
    result = run_deskbot("check-config", "-c", str(short), env={"PW": "x", "KEY": "short"})
    assert result.returncode == 2
    assert result.stdout.strip() == (
        f"{short}: nats.key_env: the key in KEY has 5 characters; use at least 32 "
        "(for example `openssl rand -hex 32`)"
    )


def test_an_edge_at_a_server_without_jetstream_says_so_and_stops_on_sigterm(tmp_path, sipp):
    hub = NatsServer(tmp_path, sites=SITES, jetstream=False).start()
    try:
        berlin = sipp(200)
        front = configs(tmp_path, hub.url, {"486": (berlin.uri("486"), "berlin")})
        edge = Edge(tmp_path / "edge-berlin.toml", "edge")
        wait_for(lambda: "JetStream off" in edge.log(), 15, "the edge to say JetStream is off")
        assert "start nats-server with -js" in edge.log()

        edge.proc.send_signal(signal.SIGTERM)
        try:
            edge.proc.wait(5)
        except subprocess.TimeoutExpired:
            edge.kill()
            pytest.fail("the edge did not stop within 5 s of SIGTERM")

        result = send(front, "486", "hello")
        assert answers(result)["486"]["reason"] == (
            "site berlin is unreachable (JetStream is off): not sent"
        )
    finally:
        hub.stop()


def test_the_readme_permissions_let_front_and_edge_work_and_no_more(
    tmp_path, nats_hub, sipp, edges
):
    paris = sipp(200)
    front = configs(tmp_path, nats_hub.url, {"801": (paris.uri("801"), "paris")})
    edges.append(Edge(tmp_path / "edge-paris.toml", "edge").wait_ready())

    assert send(front, "801", "hi").returncode == 0  # the ping was answered: an edge is online
    log = (nats_hub.workdir / "nats-server.log").read_text()
    assert "Violation" not in log, log[-2000:]

    async def as_paris() -> list[str]:
        nc = await nats.connect(
            nats_hub.url, user="edge-paris", password=nats_hub.password("edge-paris")
        )
        errors: list[str] = []
        for subject in ("deskbot.send.paris", "deskbot.reply.berlin.x", "deskbot.ping.berlin"):
            await nc.publish(subject, b"x")
        await nc.flush()
        with pytest.raises(Exception):  # noqa: B017 (a permissions violation ends the subscribe)
            sub = await nc.subscribe("deskbot.send.paris")
            await nc.flush()
            await sub.next_msg(timeout=2)
        await nc.close()
        return errors

    asyncio.run(as_paris())
    log = (nats_hub.workdir / "nats-server.log").read_text()
    for subject in ("deskbot.send.paris", "deskbot.reply.berlin.x", "deskbot.ping.berlin"):
        assert f'Publish Violation - User "edge-paris", Subject "{subject}"' in log


def test_a_site_phone_is_probed_by_its_edge_and_a_captured_probe_is_refused(
    tmp_path, nats_hub, sipp, edges, intruder
):
    """`deskbot probe` of a site phone: its edge asks it (SIP OPTIONS) and signs the answer;
    a site without an edge is said plainly; a probe captured and asked again, or altered, or
    signed with another key, is refused by the edge and no phone is asked."""
    berlin = sipp(200, method="OPTIONS")
    front = configs(
        tmp_path,
        nats_hub.url,
        {"486": (berlin.uri("486"), "berlin"), "600": ("sip:600@127.0.0.1:9", "lyon")},
    )
    edge = Edge(tmp_path / "edge-berlin.toml", "edge").wait_ready()
    edges.append(edge)
    intruder.capture(wire.PING.format(site="berlin"))

    result = run_deskbot("probe", "-c", str(front), "--json", "486,600")

    got = answers(result)
    assert (got["486"]["code"], got["486"]["reason"]) == (200, "OK"), result.stdout
    assert got["600"]["reason"] == "site lyon has no edge online: not probed"
    assert "start `deskbot edge` there" in got["600"]["hint"]
    assert result.returncode == 3  # lyon: no answer
    assert len(berlin.received()) == 1
    (probe,) = [data for _, data in intruder.captured if data]  # the pings carry no body
    mac, _, body = probe.partition(b".")
    record = json.loads(body)

    def ask(data: bytes) -> None:
        with pytest.raises(Exception):  # noqa: B017 - no answer: the request times out
            intruder.run(intruder.nc.request(wire.PING.format(site="berlin"), data, timeout=1))

    wait_for(lambda: time.time() > record["deadline"], 30, "the probe's deadline to pass")
    ask(probe)  # replayed as captured
    ask(mac + b"." + json.dumps({**record, "deadline": time.time() + 30}).encode())
    forged = {**record, "deadline": time.time() + 30}
    ask(seal.seal(seal.PROBE, KEYS["lyon"].encode(), "berlin", forged))  # another site's key
    ask(seal.seal(seal.JOB, KEYS["berlin"].encode(), "berlin", forged))  # a job's MAC kind
    wait_for(lambda: edge.log().count("a probe refused") == 4, 10, "the refusals")
    assert len(berlin.received()) == 1
