"""Real SIP peers for the tests: SIPp scenarios and baresip, on 127.0.0.1.

A missing tool fails the test loudly (``make test`` installs them); nothing
here skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from peers import PeerDidNotStart, die_with_parent, listens, start_on_free_port  # noqa: F401

HERE = Path(__file__).parent
# the session's Synapse, people at Matrix clients, slapd and PostgreSQL, for the tests that ask
pytest_plugins = ("matrix_server", "matrix_people", "slapd_server", "postgres_server")
SIPP_DIR = HERE / "sipp"

for _name in list(os.environ):  # bolt and deskbot must not pick up a developer's settings
    if _name.startswith(("SLACK_", "DESKBOT_")):
        del os.environ[_name]
# the settings cache of `deskbot send` (deskbot/settings/cache.py): this session's own
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="deskbot-test-cache-")


def require(tool: str) -> str:
    path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make test`, which installs it", pytrace=False)
    return path


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll until condition() is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def port_taken(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@dataclass
class ReceivedMessage:
    request_uri: str
    headers: dict[str, str]
    body: bytes
    method: str = "MESSAGE"


def parse_sipp_trace(text: str, method: str = "MESSAGE") -> list[ReceivedMessage]:
    """SIPp's -trace_msg file -> the requests of `method` it received (MESSAGE, NOTIFY, ...)."""
    found: list[ReceivedMessage] = []
    blocks = re.split(r"^-{10,} [0-9-]+ [0-9:.]+\n", text, flags=re.M)
    for block in blocks:
        if " message received [" not in block:
            continue
        payload = block.split("\n\n", 1)[1] if "\n\n" in block else ""
        head, _, body = payload.replace("\r\n", "\n").partition("\n\n")
        lines = head.split("\n")
        if not lines or not lines[0].startswith(f"{method} "):
            continue
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        found.append(ReceivedMessage(lines[0].split()[1], headers, body.encode()[:length], method))
    return found


def distinct_requests(copies: list[ReceivedMessage]) -> list[ReceivedMessage]:
    """One per request, first copy, in arrival order: UDP retransmissions share Call-ID and CSeq.

    A phone shows a retransmitted MESSAGE once; a new request (a new Call-ID, or the
    same dialog's next CSeq) is a new text on the screen.
    """
    seen: dict[tuple[str, str], ReceivedMessage] = {}
    for message in copies:
        ident = (message.headers.get("call-id", ""), message.headers.get("cseq", ""))
        seen.setdefault(ident, message)
    return list(seen.values())


def phone_got(phone: SippPhone) -> list[ReceivedMessage]:
    """What a SIPp phone got: its requests of its method, each once (the one way to count)."""
    return phone.received()


class SippPhone:
    """A SIPp UAS on 127.0.0.1 playing a desk phone (or a PBX)."""

    def __init__(
        self, scenario: Path, workdir: Path, transport: str = "udp", method: str = "MESSAGE"
    ):
        self.method = method  # what it receives: MESSAGE, NOTIFY or OPTIONS
        self.transport = transport
        self.scenario, self.workdir = scenario, workdir
        self.port, self.proc = start_on_free_port(
            self._start,
            "SIPp",
            lambda port: listens(self.proc, port, transport),
            lambda: self.errors.read_text(errors="replace"),
            timeout=10,
            pick=free_port,
        )

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        """Start SIPp on `port` (tests/peers.py's start_on_free_port waits for it)."""
        self.port = port
        self.trace = self.workdir / f"sipp-{port}.log"
        self.trace.touch()
        flag = {"udp": "u1", "tcp": "t1"}[self.transport]
        self.errors = self.workdir / f"sipp-{port}.err"
        self.proc = subprocess.Popen(
            [
                require("sipp"),
                "-sf",
                str(self.scenario),
                "-i",
                "127.0.0.1",
                "-p",
                str(port),
                "-t",
                flag,
                "-trace_msg",
                "-message_file",
                str(self.trace),
                "-nostdin",
                "-max_recv_loops",
                "10000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.errors.open("wb"),
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        return self.proc

    def uri(self, extension: str = "486") -> str:
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{extension}@127.0.0.1:{self.port}{suffix}"

    def copies(self) -> list[ReceivedMessage]:
        """Every copy SIPp traced, UDP retransmissions included."""
        return parse_sipp_trace(self.trace.read_text(errors="replace"), self.method)

    def received(self) -> list[ReceivedMessage]:
        """What the phone got: each request once (see distinct_requests)."""
        return distinct_requests(self.copies())

    def wait_received(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMessage]:
        return wait_for(
            lambda: len(self.received()) >= count and self.received(),
            timeout,
            what=f"{count} {self.method}(s) at SIPp port {self.port}",
        )

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# format -> (Event, Content-Type, root element) the SIPp phone insists on (screen.xml.in)
SCREENS = {
    "snom-xml": ("xml", "application/snomxml", "SnomIPPhoneText"),
    "yealink-xml": ("Yealink-xml", "application/xml", "YealinkIPPhoneTextScreen"),
}


def answer_scenario(
    workdir: Path, code: int = 200, reason: str = "OK", delay_ms: int = 0, method: str = "MESSAGE"
) -> Path:
    """SIPp's answer.xml.in filled in: take `method`, wait `delay_ms`, answer `code reason`.

    The one place the template's placeholders are filled (the benches use it too).
    """
    scenario = workdir / f"answer-{method}-{code}-{delay_ms}.xml"
    text = (SIPP_DIR / "answer.xml.in").read_text()
    pause = f'<pause milliseconds="{delay_ms}" />' if delay_ms else ""
    scenario.write_text(
        text.replace("@CODE@", str(code))
        .replace("@REASON@", reason)
        .replace("@PAUSE@", pause)
        .replace("@METHOD@", method)
    )
    assert not re.search(r"@[A-Z]+@", scenario.read_text()), f"{scenario}: a placeholder left"
    return scenario


SIPP_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    415: "Unsupported Media Type",
    481: "Call/Transaction Does Not Exist",
    489: "Bad Event",
    501: "Not Implemented",
    486: "Busy Here",
    503: "Service Unavailable",
    480: "Temporarily Unavailable",
    603: "Decline",
}


def sipp_answering(workdir: Path, code: int = 200, method: str = "MESSAGE") -> SippPhone:
    """A SIPp phone answering every `method` with `code`, for fixtures wider than one test."""
    scenario = workdir / f"answer-{method}-{code}.xml"
    text = (SIPP_DIR / "answer.xml.in").read_text()
    scenario.write_text(
        text.replace("@CODE@", str(code))
        .replace("@REASON@", SIPP_REASONS[code])
        .replace("@PAUSE@", "")
        .replace("@METHOD@", method)
    )
    return SippPhone(scenario, workdir, "udp", method)


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Callable[..., SippPhone]]:
    """sipp(code=200) starts a phone answering `code`; sipp(silent=True) one that never answers.

    `method` is what the phone takes: MESSAGE, OPTIONS, or NOTIFY (a Snom Infobox phone
    that answers only a NOTIFY with the Infobox headers and body, see notify.xml.in).
    """
    phones: list[SippPhone] = []
    reasons = SIPP_REASONS

    def start(
        code: int = 200,
        *,
        silent: bool = False,
        transport: str = "udp",
        pbx_password: str | None = None,
        delay_ms: int = 0,
        method: str = "MESSAGE",
        screen: str = "",
    ) -> SippPhone:
        if screen:  # a maker's XML screen by NOTIFY: "snom-xml" or "yealink-xml"
            event, content_type, root = SCREENS[screen]
            scenario = tmp_path / f"screen-{screen}-{code}.xml"
            text = (SIPP_DIR / "screen.xml.in").read_text()
            for key, value in {
                "@CODE@": str(code),
                "@REASON@": reasons[code],
                "@EVENT@": event,
                "@TYPE@": content_type,
                "@ROOT@": root,
            }.items():
                text = text.replace(key, value)
            scenario.write_text(text)
            method = "NOTIFY"
        elif silent:
            scenario = SIPP_DIR / "silent.xml"
        elif pbx_password is not None:
            scenario = tmp_path / "pbx.xml"
            text = (SIPP_DIR / "pbx.xml.in").read_text()
            scenario.write_text(
                text.replace("@USER@", "deskbot").replace("@PASSWORD@", pbx_password)
            )
        elif method == "NOTIFY":
            scenario = tmp_path / f"notify-{code}.xml"
            text = (SIPP_DIR / "notify.xml.in").read_text()
            text = text.replace("@CODE@", str(code)).replace("@REASON@", reasons[code])
            scenario.write_text(text)
        else:
            scenario = answer_scenario(tmp_path, code, reasons[code], delay_ms, method)
        phone = SippPhone(scenario, tmp_path, transport, method)
        phones.append(phone)
        return phone

    yield start
    for phone in phones:
        phone.stop()


class Baresip:
    """baresip as a desk phone with one identity: 200 for it, 404 for other users."""

    def __init__(self, workdir: Path, extension: str = "486", registrar: str = ""):
        """With `registrar` (host:port) the phone registers there, like a phone on a PBX."""
        self.extension = extension
        self.log = workdir / f"baresip-{extension}.log"
        home = workdir / f"baresip-{extension}"
        home.mkdir()
        account = (
            f"<sip:{extension}@{registrar}>;regint=60"
            if registrar
            else (f"<sip:{extension}@127.0.0.1>;regint=0")
        )
        (home / "accounts").write_text(account + "\n")
        self.home = home
        self.port, self.proc = start_on_free_port(
            self._start,
            "baresip",
            lambda port: listens(self.proc, port, "udp"),
            lambda: self.output(),
            timeout=30,
            pick=free_port,
        )
        if registrar:
            wait_for(lambda: "200 OK" in self.output(), what=f"baresip {extension} registered")

    def _start(self, port: int) -> subprocess.Popen[bytes]:
        (self.home / "config").write_text(
            textwrap.dedent(f"""\
            sip_listen 127.0.0.1:{port}
            module_path /usr/lib/baresip/modules
            module stdio.so
            module g711.so
            module_app account.so
            module_app menu.so
            audio_player nothing
            audio_source nothing
            """)
        )
        self.proc = subprocess.Popen(
            [require("baresip"), "-f", str(self.home)],
            stdin=subprocess.PIPE,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        return self.proc

    def uri(self, extension: str | None = None, transport: str = "udp") -> str:
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"sip:{extension or self.extension}@127.0.0.1:{self.port}{suffix}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[Baresip]:
    phone = Baresip(tmp_path)
    yield phone
    phone.stop()


def write_config(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def service_lines(tmp_path: Path, *, desk: int = 0, api: int = 0) -> list[str]:
    """A `deskbot run` config on loopback: SIP, the audit file, health, [push] for HTTP phones
    (password in $DESKBOT_PUSH_PASSWORD); [desk] on port ``desk`` and [api] on port ``api``
    when given (the caller adds its [api.clients.*] and phones)."""
    lines = [
        "[sip]",
        'listen = "127.0.0.1:0"',
        "timeout = 1.0",
        "[audit]",
        f'path = "{tmp_path / "audit.sqlite3"}"',
        "[health]",
        'listen = "127.0.0.1:0"',
        "[push]",
        'username = "deskbot"',
        'password_env = "DESKBOT_PUSH_PASSWORD"',
    ]
    if desk:
        lines += desk_lines(desk)
    if api:
        lines += ["[api]", f'listen = "127.0.0.1:{api}"']
    return lines


def desk_lines(port: int) -> list[str]:
    """``[desk]`` on 127.0.0.1:``port``, the URL the phones' keys fetch."""
    return ["[desk]", f'listen = "127.0.0.1:{port}"', f'url = "http://127.0.0.1:{port}"']


def phone_lines(
    extension: str, uri: str, fmt: str = "", http: str = "", label: str = ""
) -> list[str]:
    """One ``[phones.EXT]`` table (format, HTTP address and label only when given)."""
    lines = [f"[phones.{extension}]", f'uri = "{uri}"']
    lines += [f'format = "{fmt}"'] * bool(fmt) + [f'http = "{http}"'] * bool(http)
    return lines + [f'label = "{label}"'] * bool(label)


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """A GET as a phone makes it (a key's URL): the status and body, also of a 4xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def ok_key(screen: bytes, fmt: str) -> str:
    """The URL behind the OK key of a pushed screen, read as that maker's firmware reads it."""
    root = ET.fromstring(screen)
    if fmt == "poly-push":  # <softkey label="OK" action="SoftKey:Fetch;URL"/> inside Data
        [key] = root.iter("softkey")
        label, action = key.get("label"), key.get("action") or ""
        assert action.startswith("SoftKey:Fetch;"), action
        url = action.removeprefix("SoftKey:Fetch;")
    else:
        tags = {"snom-xml": ("SoftKeyItem", "URL"), "yealink-xml": ("SoftKey", "URI")}[fmt]
        [key] = root.findall(tags[0])
        label, url = key.findtext("Label"), key.findtext(tags[1]) or ""
    assert label == "OK", label
    return url


def thanks_of(page: bytes, fmt: str) -> str:
    """The text of the screen a press is answered with; it must be the maker's own XML."""
    root = ET.fromstring(page)
    if fmt == "poly-push":  # an XHTML page for the microbrowser
        xhtml = "{http://www.w3.org/1999/xhtml}"
        assert root.tag == f"{xhtml}html", root.tag
        return "".join(root.find(f"{xhtml}body").itertext())  # type: ignore[union-attr]
    assert (
        root.tag == {"snom-xml": "SnomIPPhoneText", "yealink-xml": "YealinkIPPhoneTextScreen"}[fmt]
    )
    assert not [el for el in root if "SoftKey" in el.tag]  # a thank-you screen has no keys
    return root.findtext("Text") or ""


# `deskbot run` with the HTTP API and /healthz on loopback: add [api.clients.*] and the phones;
# .format(tmp=the audit log's folder, api=the API's port, ...)
API_SERVICE = """
[sip]
listen = "127.0.0.1:0"
timeout = 2.0
[health]
listen = "127.0.0.1:0"
[audit]
path = "{tmp}/audit.sqlite3"
[api]
listen = "127.0.0.1:{api}"
"""


def one_phone_config(
    path: Path, uri: str, *, audit: Path | None = None, sip: str = "", extra: str = ""
) -> Path:
    """A config with one phone, 486 at `uri`, and deskbot's SIP on a free port.

    `sip`: more [sip] lines; `audit`: the audit log's path; `extra`: TOML after
    `uri` (more keys of [phones.486] first, then any tables).
    """
    lines = ["[sip]", 'listen = "127.0.0.1:0"', *sip.splitlines()]
    if audit is not None:
        lines += ["[audit]", f'path = "{audit}"']
    lines += ["[phones.486]", f'uri = "{uri}"']
    path.write_text("\n".join(lines) + "\n" + textwrap.dedent(extra))
    return path


def run_deskbot(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The installed command line, as a user (or the acceptance tests) would run it."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(Path(sys.executable).parent / "deskbot"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        preexec_fn=die_with_parent,
    )


def api_post(
    port: int, token: str, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """POST JSON to deskbot's HTTP API on 127.0.0.1 as a client: (status, JSON answer)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


async def until(
    condition: Callable[[], object],
    timeout: float = 10.0,
    what: str = "condition",
    every: float = 0.01,
):
    """The asyncio twin of wait_for: poll (each `every` s) without blocking the event loop."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
    return value


def healthz_status(log: str) -> tuple[int, dict]:
    """GET /healthz on the port a deskbot process logged: (HTTP status, JSON).

    The status is what the image's HEALTHCHECK reads: 200 healthy, 503 not.
    """
    url = re.findall(r"health and metrics on (http://\S+/healthz)", log)[-1]
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:  # 503 while something is down: the same JSON
        return exc.code, json.load(exc)


def healthz(log: str) -> dict:
    """The JSON of /healthz whatever its status (healthz_status also gives the status)."""
    return healthz_status(log)[1]


class DeskbotRun:
    """`deskbot run -c CONFIG` as a service manager runs it; its log is the test's window."""

    def __init__(self, config: Path, env: dict[str, str], log_path: Path):
        self.config, self.env, self.log_path = config, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: str = "deskbot running") -> DeskbotRun:
        """Start and wait for `ready` in the log (deskbot has connected its chats)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "deskbot"), "run", "-c", str(self.config)],
            env={**os.environ, **self.env},
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        wait_for(
            lambda: self.alive() and ready in self.log(offset), timeout=30, what="deskbot to start"
        )
        return self

    def log(self, offset: int = 0) -> str:
        return self.log_path.read_bytes()[offset:].decode(errors="replace")

    def alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"deskbot exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        return True

    def health(self) -> dict:
        return healthz(self.log())

    def health_status(self) -> tuple[int, dict]:
        return healthz_status(self.log())

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright cannot download its own browser here


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Playwright driving Debian's Chromium (headless); `make test` installs both.

    Per module: Playwright's sync API holds an event loop while it runs, and the
    asyncio tests of the next module need the thread without one.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Chat:
    """A replier that keeps what a chat would show, for tests of the relay and the sources."""

    waiting_after = None

    def __init__(self) -> None:
        self.shown: list[str] = []

    async def answer(self, answer: Any) -> None:
        from deskbot.relay import report

        self.shown.append(report.answer_text(answer.text, answer.error))

    async def waiting(self, job: Any) -> None:
        pass

    async def report(self, result: Any) -> None:
        from deskbot.relay import report

        self.shown.append(report.plain(result))


@pytest.fixture
def http_phones() -> Iterator[Any]:
    """Fake Poly and Cisco phones on 127.0.0.1 (tests/http_phones.py), any number of them."""
    from http_phones import HttpPhones

    phones = HttpPhones().start()
    yield phones
    phones.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store's backend: "sqlite" unless a test is parametrized (indirect) with "postgres"."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """store(replica="r1", lease=10) -> a command log; each call opens it anew (as another
    process would) on the test's own SQLite file or PostgreSQL database; closed after the test."""
    opened: list[Any] = []
    if backend == "postgres":
        from postgres_server import PASSWORD

        from deskbot.store.postgres import PostgresLog

        url = request.getfixturevalue("postgres").database()

        def make(replica: str = "r1", lease: float = 10.0) -> Any:
            opened.append(PostgresLog(url, PASSWORD, replica, lease))
            return opened[-1]
    else:
        from deskbot.store.audit import AuditLog

        def make(replica: str = "r1", lease: float = 10.0) -> Any:
            opened.append(AuditLog(tmp_path / "audit.sqlite3", replica, lease))
            return opened[-1]

    yield make
    for log in opened:
        with contextlib.suppress(Exception):  # closed by the test already
            log.close()
