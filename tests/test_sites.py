"""Several offices: phones with a `site` go through that site's `deskbot edge` over NATS.

Real peers only: a nats-server with JetStream on loopback, `deskbot edge` and
`deskbot send` / `deskbot run` as a user starts them, SIPp desk phones.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import (
    DeskbotRun,
    SippPhone,
    free_port,
    healthz,
    phone_got,
    run_deskbot,
    wait_for,
    write_config,
)
from nats_server import NatsServer
from peers import die_with_parent
from slapd_server import own_ca

DESKBOT = str(Path(sys.executable).parent / "deskbot")
TOKEN = "t" * 32


@pytest.fixture(scope="module")
def nats_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"), sites=SITES).start()
    yield server
    server.stop()


class Edge:
    """`deskbot edge -c PATH`, as a service manager starts it."""

    def __init__(self, config: Path, name: str):
        self.log_path = config.parent / f"{name}.log"
        self.proc = subprocess.Popen(
            [DESKBOT, "edge", "-c", str(config)],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        return healthz(self.log())

    def wait_ready(self, count: int = 1) -> Edge:
        wait_for(lambda: self.log().count(" ready (") >= count, 20, "the edge to be ready")
        return self

    def kill(self) -> None:
        """SIGKILL the edge and its SIP worker: a power cut, not a stop."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


SITES = ("berlin", "lyon", "austin", "paris", "rome", "oslo")
KEYS = {site: site[0] * 64 for site in SITES}  # each site's own key (`openssl rand -hex 32`)


@pytest.fixture(autouse=True)
def nats_secrets(monkeypatch: pytest.MonkeyPatch, nats_hub: NatsServer) -> None:
    """The passwords and site keys the configs name, as a service manager sets them."""
    for user in ("front", "intruder", *(f"edge-{site}" for site in SITES)):
        monkeypatch.setenv(env_name(user), nats_hub.password(user))
    for site, key in KEYS.items():
        monkeypatch.setenv(f"DESKBOT_TEST_KEY_{site.upper()}", key)


def env_name(user: str) -> str:
    return "DESKBOT_TEST_NATS_" + user.replace("-", "_").upper()


@pytest.fixture
def edges() -> Iterator[list[Edge]]:
    started: list[Edge] = []
    yield started
    for edge in started:
        edge.stop()


def configs(
    tmp_path: Path, url: str, phones: dict[str, tuple[str, str]], take_within: float = 2.0
) -> Path:
    """front.toml with the phones (extension -> (uri, site)); edge-SITE.toml for each site."""
    table = "".join(
        f'[phones.{ext}]\nuri = "{uri}"\nsite = "{site}"\n' for ext, (uri, site) in phones.items()
    )
    common = f"""
        [sip]
        listen = "127.0.0.1:0"
        timeout = 3.0
        [audit]
        path = "{tmp_path}/audit.sqlite3"
        [health]
        listen = "127.0.0.1:0"
        [nats]
        url = "{url}"
        take_within = {take_within}
        """
    keys = ", ".join(f'{site} = "DESKBOT_TEST_KEY_{site.upper()}"' for site in KEYS)
    front = write_config(
        tmp_path / "front.toml",
        common
        + f'user = "front"\npassword_env = "{env_name("front")}"\n'
        + f'key_env = "DESKBOT_TEST_KEY_BERLIN"\nsite_keys_env = {{ {keys} }}\n',
    )
    with front.open("a") as f:
        f.write(table)
    for site in {site for _, site in phones.values() if site}:
        login = f'user = "edge-{site}"\npassword_env = "{env_name(f"edge-{site}")}"\n'
        key = f'key_env = "DESKBOT_TEST_KEY_{site.upper()}"\n'
        write_config(
            tmp_path / f"edge-{site}.toml", common + login + key + f'[edge]\nsite = "{site}"\n'
        )
    return front


def send(front: Path, targets: str, text: str) -> subprocess.CompletedProcess[str]:
    return run_deskbot("send", "-c", str(front), "--json", targets, text)


def answers(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    return {(r := json.loads(line))["target"]: r for line in result.stdout.splitlines()}


def texts(phone: SippPhone) -> list[bytes]:
    """What the phone's screen showed (conftest's phone_got: retransmissions once)."""
    return [m.body for m in phone_got(phone)]


def test_a_site_phone_is_sent_by_its_edge_and_answers_in_the_same_report_and_audit(
    tmp_path, nats_hub, sipp, edges
):
    berlin, local = sipp(200), sipp(404)
    front = configs(
        tmp_path, nats_hub.url, {"486": (berlin.uri("486"), "berlin"), "487": (local.uri(), "")}
    )
    edges.append(Edge(tmp_path / "edge-berlin.toml", "edge").wait_ready())

    result = send(front, "486,487", "lunch is here")

    assert result.returncode == 1, result.stderr  # 487 answered 404
    got = answers(result)
    assert (got["486"]["code"], got["486"]["reason"]) == (200, "OK")
    assert (got["487"]["code"], got["487"]["reason"]) == (404, "Not Found")
    assert texts(berlin) == [b"lunch is here"]
    with sqlite3.connect(tmp_path / "audit.sqlite3") as db:
        rows = db.execute("SELECT extension, code FROM deliveries ORDER BY extension").fetchall()
    assert rows == [("486", 200), ("487", 404)]
    assert "lunch is here" not in edges[0].log()  # no body in the edge's log
    assert "Violation" not in (nats_hub.workdir / "nats-server.log").read_text()
    health = edges[0].health()
    assert health["ok"] is True and health["nats"] == {"connected": True, "site": "berlin"}


def test_a_site_without_an_edge_is_answered_at_once_and_its_text_never_arrives_later(
    tmp_path, nats_hub, sipp, edges
):
    lyon = sipp(200)
    front = configs(tmp_path, nats_hub.url, {"600": (lyon.uri("600"), "lyon")})

    started = time.monotonic()
    result = send(front, "600", "fire drill")
    took = time.monotonic() - started

    assert result.returncode == 3
    line = answers(result)["600"]
    assert line["reason"] == "site lyon has no edge online: not sent"
    assert "no edge of this phone's office is online" in line["hint"]
    assert took < 30  # only a hang; "no edge online" (not a timeout) is the reason above
    edges.append(Edge(tmp_path / "edge-lyon.toml", "edge").wait_ready())
    assert send(front, "600", "second").returncode == 0
    assert texts(lyon) == [b"second"]  # a queued first text would have come first


def test_a_delivery_its_edge_cannot_take_in_time_is_not_sent_and_never_sent_later(
    tmp_path, nats_hub, sipp, edges
):
    silent, later = sipp(silent=True), sipp(200)
    front = configs(
        tmp_path,
        nats_hub.url,
        {"700": (silent.uri("700"), "austin"), "701": (later.uri("701"), "austin")},
        take_within=1.0,
    )
    edge_config = tmp_path / "edge-austin.toml"
    edge_config.write_text(
        edge_config.read_text().replace("timeout = 3.0", "timeout = 3.0\nmax_in_flight = 1")
    )
    edges.append(Edge(edge_config, "edge").wait_ready())
    busy = subprocess.Popen(
        [DESKBOT, "send", "-c", str(front), "700", "hold the line"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    silent.wait_received(1)  # the edge's one slot is taken by a phone that never answers

    result = send(front, "701", "too late")

    assert result.returncode == 3
    assert (
        answers(result)["701"]["reason"]
        == "site austin's edges did not take it within 1 s: not sent"
    )
    busy.wait(30)
    wait_for(lambda: "408" in edges[0].log(), 15, "the silent phone's timeout at the edge")
    assert send(front, "701", "in time").returncode == 0  # the edge free again takes the next
    assert texts(later) == [b"in time"]


def sip_ports(edge: Edge) -> set[int]:
    """The UDP ports an edge (and its SIP worker) sends from: a MESSAGE's Via names one."""
    main = psutil.Process(edge.proc.pid)
    ports = set()
    for proc in (main, *main.children(recursive=True)):
        ports |= {c.laddr.port for c in proc.net_connections("udp") if c.laddr}
    return ports


def test_two_edges_of_a_site_share_it_and_one_killed_mid_send_loses_nothing(
    tmp_path, nats_hub, sipp, edges
):
    phone = sipp(200, delay_ms=1500)  # each text is in flight for 1.5 s
    extensions = [f"80{i}" for i in range(4)]
    front = configs(
        tmp_path,
        nats_hub.url,
        {ext: (phone.uri(ext), "paris") for ext in extensions},
        take_within=15.0,
    )
    config = tmp_path / "edge-paris.toml"
    config.write_text(  # one text at a time each: the second edge takes the next
        config.read_text().replace("timeout = 3.0", "timeout = 3.0\nmax_in_flight = 1")
    )
    edges.extend([Edge(config, "edge-a").wait_ready(), Edge(config, "edge-b").wait_ready()])
    first = send(front, ",".join(extensions), "one")
    assert first.returncode == 0, first.stdout
    assert all("delivery" in edge.log() for edge in edges)  # both edges delivered
    sending = subprocess.Popen(
        [DESKBOT, "send", "-c", str(front), "--json", ",".join(extensions), "two"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    [in_flight] = wait_for(
        lambda: [m for m in phone_got(phone) if m.body == b"two"][:1], what="the first 'two'"
    )
    via = int(re.search(r"127\.0\.0\.1:(\d+)", in_flight.headers["via"]).group(1))
    [killed] = [edge for edge in edges if via in sip_ports(edge)]
    [survivor] = [edge for edge in edges if edge is not killed]
    killed.kill()  # the phone has that text; its edge never answered it

    out, _ = sending.communicate(timeout=60)

    lines = {(r := json.loads(line))["target"]: r for line in out.splitlines()}
    cut = in_flight.request_uri.split(":")[1].split("@")[0]
    assert lines[cut]["outcome"] == "unconfirmed", lines  # told honestly, not "delivered"
    others = [ext for ext in extensions if ext != cut]
    assert {ext: lines[ext]["code"] for ext in others} == dict.fromkeys(others, 200), lines
    assert sending.returncode == 3
    got = [(m.request_uri.split(":")[1].split("@")[0], m.body) for m in phone_got(phone)]
    assert sorted(got) == sorted((ext, text) for ext in extensions for text in (b"one", b"two"))
    wait_for(lambda: "was started before; not sent again" in survivor.log(), 30, "the redelivery")
    assert sorted(t for t in texts(phone) if t == b"two") == [b"two"] * 4  # none twice


def test_an_edge_killed_mid_send_and_restarted_sends_nothing_twice_and_says_not_confirmed(
    tmp_path, nats_hub, sipp, edges
):
    slow = sipp(200, delay_ms=2500)
    front = configs(tmp_path, nats_hub.url, {"900": (slow.uri("900"), "rome")})
    config = tmp_path / "edge-rome.toml"
    edges.append(Edge(config, "edge").wait_ready())
    sending = subprocess.Popen(
        [DESKBOT, "send", "-c", str(front), "--json", "900", "only once"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    slow.wait_received(1)
    edges[0].kill()  # the phone has the text; the edge never acked it
    edges.append(Edge(config, "edge-again").wait_ready())

    out, _ = sending.communicate(timeout=60)

    assert sending.returncode == 3
    line = json.loads(out)
    assert line["code"] == 0 and line["reason"].startswith("Not confirmed")
    assert line["outcome"] == "unconfirmed"
    wait_for(lambda: "was started before; not sent again" in edges[1].log(), 30, "the redelivery")
    assert texts(slow) == [b"only once"]


def test_nats_restarted_mid_run_front_and_edge_reconnect_and_in_flight_is_told_honestly(
    tmp_path, sipp, edges
):
    hub = NatsServer(tmp_path, sites=SITES).start()
    slow, fast = sipp(200, delay_ms=1500), sipp(200)
    front = configs(
        tmp_path,
        hub.url,
        {"950": (slow.uri("950"), "oslo"), "951": (fast.uri("951"), "oslo")},
        take_within=3.0,
    )
    api_port = free_port()
    with front.open("a") as f:
        f.write(
            f'[api]\nlisten = "127.0.0.1:{api_port}"\n'
            '[api.clients.ops]\ntoken_env = "SITES_TOKEN"\n'
        )
    edges.append(Edge(tmp_path / "edge-oslo.toml", "edge").wait_ready())
    run = DeskbotRun(front, {"SITES_TOKEN": TOKEN}, tmp_path / "front.log").start()
    try:

        def post(targets: str, text: str) -> dict:
            request = urllib.request.Request(
                f"http://127.0.0.1:{api_port}/v1/send",
                json.dumps({"targets": targets, "text": text}).encode(),
                {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as resp:
                return json.load(resp)["deliveries"][0]

        wait_for(lambda: run.health()["sip"]["nats"]["connected"], 20, "the front on NATS")
        assert post("951", "before")["code"] == 200
        in_flight: dict = {}
        thread = threading.Thread(target=lambda: in_flight.update(post("950", "in flight")))
        thread.start()
        slow.wait_received(1)
        hub.stop()  # the phone is answering; the edge's answer has nowhere to go yet
        down = post("951", "while down")
        status, health = run.health_status()
        assert health["sip"]["nats"]["connected"] is False
        assert status == 200 and health["ok"] is True  # a NATS outage keeps the front healthy
        hub.start()
        thread.join(60)

        assert down["reason"] == "site oslo is unreachable (NATS is not connected): not sent"
        assert in_flight["code"] == 200 or in_flight["outcome"] == "unconfirmed", in_flight
        wait_for(lambda: run.health()["sip"]["nats"]["connected"], 20, "the front to reconnect")
        wait_for(lambda: "reconnected" in edges[0].log(), 20, "the edge to reconnect")
        after = wait_for(lambda: (d := post("951", "after"))["code"] == 200 and d, 20, "a send")
        assert after["reason"] == "OK"
        assert texts(fast) == [b"ops: before", b"ops: after"]  # "while down" never arrives
        assert texts(slow) == [b"ops: in flight"]
    finally:
        run.stop()
        hub.stop()


def test_a_site_phone_without_nats_and_two_logins_are_refused_with_their_key_paths():
    from deskbot.settings.load import ConfigError, parse

    raw = {
        "phones": {"486": {"uri": "sip:486@10.1.0.86", "site": "berlin"}},
        "edge": {"site": "berlin"},
    }
    with pytest.raises(ConfigError) as refused:
        parse(raw, Path("c.toml"), {})
    assert refused.value.problems == [
        "c.toml: phones.486.site: a phone with a site is sent over NATS: add a [nats] table",
        "c.toml: edge: an edge takes its deliveries from NATS: add a [nats] table",
    ]
    raw["nats"] = {
        "url": "nats://hub:4222",
        "token_env": "T",
        "credentials_env": "C",
        "key_env": "K",
    }
    with pytest.raises(ConfigError) as refused:
        parse(raw, Path("c.toml"), {"T": "x", "C": "y", "K": "k" * 32})
    assert refused.value.problems == [
        "c.toml: nats: give one way to log in, not credentials_env and token_env"
    ]


def test_deskbot_edge_without_an_edge_table_says_so_and_exits_2(tmp_path, nats_hub):
    front = configs(tmp_path, nats_hub.url, {})

    result = run_deskbot("edge", "-c", str(front))

    assert result.returncode == 2
    assert result.stderr.strip() == f"{front}: edge: add an [edge] table with this office's site"


def test_a_tls_hub_with_user_and_password_carries_a_text_to_the_edge(
    tmp_path, sipp, edges, monkeypatch
):
    """`tls://` to a hub that takes TLS only, trusting the hub's CA as the host does
    (SSL_CERT_FILE); the front and the edge log in with user and password."""
    ca, cert, key = own_ca(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    hub = NatsServer(tmp_path / "hub", sites=SITES, tls=(cert, key))
    (tmp_path / "hub").mkdir()
    hub.start()
    try:
        assert hub.url.startswith("tls://")
        phone = sipp(200)
        front = configs(tmp_path, hub.url, {"486": (phone.uri("486"), "berlin")})
        edges.append(Edge(tmp_path / "edge-berlin.toml", "edge").wait_ready())
        result = send(front, "486", "over tls")
        assert result.returncode == 0, result.stdout + result.stderr
        assert texts(phone) == [b"over tls"]
    finally:
        hub.stop()
