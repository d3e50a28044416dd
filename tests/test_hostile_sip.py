"""Hostile SIP peers (issue 11): phones and clients that send what no phone should.

The SIP worker is driven over its own line protocol (``python -m
deskbot.senders.sip.worker``), as the agent drives it. The peers are real sockets on
127.0.0.1: a UDP "phone" that answers deskbot's MESSAGEs with whatever bytes a
test gives it, and a client that floods deskbot's SIP port with requests
deskbot never asked for. The worker must report what it can, refuse what it
does not do, keep its line protocol intact and never die.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import die_with_parent

from deskbot.senders.sip import protocol
from deskbot.settings.load import ConfigError, parse

# -- the worker, over its line protocol ---------------------------------------


class WorkerProcess:
    """One ``deskbot.senders.sip.worker`` child; every line it writes must be UTF-8 JSON."""

    def __init__(self, workdir: Path, timeout_ms: int = 5000):
        self.stderr_path = workdir / f"worker-{time.monotonic_ns()}.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deskbot.senders.sip.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_path.open("wb"),
            preexec_fn=die_with_parent,
        )
        self.messages: list[dict[str, Any]] = []
        self.bad_lines: list[bytes] = []
        self.done: dict[int, list[Any]] = {}
        self._ids = itertools.count(1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._write(
            {
                "v": protocol.VERSION,
                "version": "test",
                "host": "127.0.0.1",
                "port": 0,
                "transport": "udp",
                "from_uri": "sip:deskbot@127.0.0.1",
                "display_name": "Deskbot",
                "timeout_ms": timeout_ms,
                "registrar": None,
                "log_level": 2,
            }
        )
        ready = wait_for(
            lambda: not self.alive() or self.first("ready"), what="the worker to be ready"
        )
        assert ready is not True, self.stderr()
        self.port, self.pid = int(ready["port"]), int(ready["pid"])
        assert self.pid == self.proc.pid

    def _write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(protocol.encode(message))
            self.proc.stdin.flush()
        except BrokenPipeError:
            pytest.fail(f"worker died ({self.proc.wait()}):\n{self.stderr()}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line.decode("utf-8"))  # strict: what the parent relies on
            except ValueError:
                self.bad_lines.append(line)
                continue
            self.messages.append(message)
            if message.get("op") == "done":
                for item in message["items"]:
                    self.done[int(item[0])] = item

    def first(self, op: str) -> dict[str, Any] | None:
        return next((m for m in self.messages if m.get("op") == op), None)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def send(self, uri: str, text: str = "hello", kind: str | None = None) -> int:
        send_id = next(self._ids)
        item = [send_id, uri, text] if kind is None else [send_id, uri, text, kind]
        self._write({"op": "send", "items": [item]})
        return send_id

    def result(self, send_id: int, timeout: float = 10.0) -> list[Any]:
        """[id, code, reason, local] for send_id; fails at once if the worker died."""
        wait_for(
            lambda: send_id in self.done or not self.alive(),
            timeout,
            what=f"the answer to send {send_id}",
        )
        assert send_id in self.done, f"worker died ({self.proc.returncode}):\n{self.stderr()}"
        return self.done[send_id]

    def assert_healthy(self) -> None:
        assert self.alive(), f"worker died ({self.proc.returncode}):\n{self.stderr()}"
        assert not self.bad_lines, self.bad_lines[:3]
        assert "Assertion" not in self.stderr() and "Traceback" not in self.stderr()

    def stop(self) -> None:
        if self.alive():
            try:
                self._write({"op": "stop"})
                self.proc.wait(5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.proc.wait()
        self._reader.join(5)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(tmp_path)
    yield w
    w.stop()


# -- a hostile phone -----------------------------------------------------------

ANSWER_HEADERS = (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")


def answer_head(request: bytes, status_line: bytes) -> list[bytes]:
    """The status line and the headers that match `request`'s transaction."""
    lines = [status_line]
    for header in request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name = header.split(b":", 1)[0].strip().lower()
        if name in ANSWER_HEADERS:
            lines.append(header + (b";tag=hostile" if name in (b"to", b"t") else b""))
    return lines


def response(request: bytes, status_line: bytes) -> bytes:
    """A response to `request` that pjsip matches to its transaction."""
    return b"\r\n".join([*answer_head(request, status_line), b"Content-Length: 0", b"", b""])


class HostilePhone:
    """A UDP 'phone' on 127.0.0.1: `answer(request)` gives the datagrams to send back."""

    def __init__(self, answer: Callable[[bytes], list[bytes]]):
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[bytes, tuple[str, int]]] = []
        self.errors: list[BaseException] = []  # a broken test answer, reported at close
        self.closed = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests.append((data, addr))
            try:
                for datagram in self.answer(data):
                    self.sock.sendto(datagram, addr)
            except Exception as exc:
                self.errors.append(exc)

    def uri(self, extension: str = "486") -> str:
        return f"sip:{extension}@127.0.0.1:{self.port}"

    def reply_all(self, status_line: bytes) -> None:
        """Answer every request received so far (retransmissions included)."""
        for data, addr in list(self.requests):
            self.sock.sendto(response(data, status_line), addr)

    def close(self) -> None:
        self.closed = True
        self.thread.join(2)
        self.sock.close()
        assert not self.errors, self.errors


@pytest.fixture
def hostile_phone() -> Iterator[Callable[..., HostilePhone]]:
    phones: list[HostilePhone] = []

    def start(answer: Callable[[bytes], list[bytes]]) -> HostilePhone:
        phones.append(HostilePhone(answer))
        return phones[-1]

    yield start
    for phone in phones:
        phone.close()


def answering(status_line: bytes) -> Callable[[bytes], list[bytes]]:
    return lambda request: [response(request, status_line)]


def printable(reason: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in reason)


# -- item 1: what a phone says cannot break the worker -------------------------


def test_a_reason_phrase_that_is_not_utf8_is_reported_and_the_worker_lives_on(
    worker: WorkerProcess, hostile_phone
):
    held = hostile_phone(lambda request: [])  # a well-behaved phone that answers later
    latin1 = hostile_phone(answering(b"SIP/2.0 404 Nicht \xe4nderbar"))
    in_flight = worker.send(held.uri(), "in flight")
    wait_for(lambda: held.requests, what="the MESSAGE at the held phone")
    assert worker.result(worker.send(latin1.uri()))[1:] == [404, "Nicht änderbar", False]
    held.reply_all(b"SIP/2.0 200 OK")
    assert worker.result(in_flight)[1:] == [200, "OK", False]
    worker.assert_healthy()


@pytest.mark.parametrize(
    ("kind", "method"), [("snom-infobox", b"NOTIFY "), ("options", b"OPTIONS ")]
)
def test_notify_and_options_answers_are_made_safe_like_message_answers(
    worker: WorkerProcess, hostile_phone, kind: str, method: bytes
):
    phone = hostile_phone(answering(b"SIP/2.0 489 Bad\x1b[2J Event \xff"))
    _, code, reason, local = worker.result(worker.send(phone.uri(), "<InfoBoxQueue/>", kind))
    assert (code, reason, local) == (489, "Bad [2J Event ÿ", False)
    assert phone.requests[0][0].startswith(method)
    worker.assert_healthy()


def test_an_unknown_kind_of_request_is_refused_by_the_worker_and_it_lives_on(
    worker: WorkerProcess, hostile_phone
):
    phone = hostile_phone(answering(b"SIP/2.0 200 OK"))
    refused = worker.result(worker.send(phone.uri(), "x", "INVITE\r\nX-Evil: 1"))
    assert refused[1] == 501 and refused[3] is True and printable(refused[2])
    # the next send's round trip is the barrier: had the INVITE gone out, it came first
    assert worker.result(worker.send(phone.uri()))[1:] == [200, "OK", False]
    assert [data.split(b" ", 1)[0] for data, _ in phone.requests] == [b"MESSAGE"]
    worker.assert_healthy()


@pytest.mark.parametrize(
    ("status_line", "expected"),
    [
        (b"SIP/2.0 404 caf\xc3\xa9 \xf0\x9f\x93\x9e", "café 📞"),  # UTF-8 stays UTF-8
        (b"SIP/2.0 486 Busy\x1b[2J\x07\x7f here", "Busy [2J here"),  # terminal controls
        (b"SIP/2.0 480 Away\xc2\x85\xe2\x80\xae now", "Away now"),  # NEL, right-to-left override
        (b"SIP/2.0 603 " + b"x" * 3000, "x" * protocol.MAX_REASON_CHARS),
        (b"SIP/2.0 404 \xff\xfe\xfd", "ÿþý"),
    ],
)
def test_reason_phrases_are_printable_and_bounded(
    worker: WorkerProcess, hostile_phone, status_line: bytes, expected: str
):
    phone = hostile_phone(answering(status_line))
    _, code, reason, local = worker.result(worker.send(phone.uri()))
    assert (code, reason, local) == (int(status_line.split()[1]), expected, False)
    worker.assert_healthy()


# -- item 4: the registrar user name goes into the Authorization header -------


def registrar_problems(username: str) -> list[str]:
    raw = {"sip": {"registrar": {"uri": "sip:pbx.test", "username": username, "password_env": "P"}}}
    try:
        parse(raw, Path("deskbot.toml"), {"P": "s3cret"})
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(
    "username",
    ["desk\r\nX-Injected: 1", "desk\nbot", 'desk"bot', "desk bot", "desk\\bot", "desk\x00",
     "desk\x1b[2J", "desk\tbot", "dëskbot", "", "x" * 65],
)  # fmt: skip
def test_a_registrar_username_that_could_bend_the_authorization_header_is_refused(username):
    [line] = registrar_problems(username)
    assert line.startswith("deskbot.toml: sip.registrar.username: "), line
    assert "printable ASCII characters without spaces, quotes or backslashes" in line
    assert "\n" not in line and "\r" not in line  # the bad value is shown escaped


@pytest.mark.parametrize(
    "username", ["deskbot", "4711", "desk.bot_1-2", "bot+1@pbx.test", "x" * 64]
)
def test_ordinary_registrar_usernames_are_accepted(username):
    assert registrar_problems(username) == []


# -- item 2: calls and subscriptions nobody asked for --------------------------

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)


def request(method: str, target: int, me: int, n: int) -> tuple[str, bytes]:
    """(branch, datagram): an out-of-dialog request with a Contact back to `me`."""
    branch = f"z9hG4bK-hostile-{method}-{n}"
    extra, body = "", b""
    if method == "INVITE":
        extra, body = "Content-Type: application/sdp\r\n", SDP
    elif method == "SUBSCRIBE":
        extra = "Event: presence\r\nExpires: 600\r\nAccept: application/pidf+xml\r\n"
    head = (
        f"{method} sip:deskbot@127.0.0.1:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:intruder@127.0.0.1:{me}>;tag=t{n}\r\n"
        f"To: <sip:deskbot@127.0.0.1:{target}>\r\n"
        f"Call-ID: hostile-{method}-{n}@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:intruder@127.0.0.1:{me}>\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return branch, head.encode() + body


def flood(
    port: int,
    methods: list[str],
    finals: dict[str, int],
    inbound: list[bytes],
    keep_going: Callable[[], bool],
    window: int = 50,
    deadline: float = 60.0,
) -> None:
    """Send every request, at most `window` unanswered at a time.

    Fills `finals` (final status by Via branch) and `inbound` (requests deskbot
    sent to us) as answers come in; a request unanswered for 5 s is given up.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    me = sock.getsockname()[1]
    todo = [request(m, port, me, n) for n, m in enumerate(methods)]
    todo.reverse()
    waiting: dict[str, float] = {}
    end = time.monotonic() + deadline
    try:
        while (todo or waiting) and time.monotonic() < end and keep_going():
            while todo and len(waiting) < window:
                branch, datagram = todo.pop()
                sock.sendto(datagram, ("127.0.0.1", port))
                waiting[branch] = time.monotonic()
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                data = b""
            if data.startswith(b"SIP/2.0 "):
                code = int(data.split()[1])
                found = re.search(rb"branch=([^;\s,]+)", data)
                branch = found.group(1).decode() if found else ""
                if code >= 200 and branch in waiting:
                    finals[branch] = code
                    del waiting[branch]
            elif data:
                inbound.append(data)
            for branch, sent in list(waiting.items()):  # lost to a full buffer: give up on it
                if time.monotonic() - sent > 5:
                    del waiting[branch]
    finally:
        sock.close()


def test_a_flood_of_invites_subscribes_and_options_is_refused_and_sends_still_work(
    worker: WorkerProcess, sipp
):
    phone = sipp(200)
    started = time.monotonic()
    finals: dict[str, int] = {}
    inbound: list[bytes] = []
    methods = ["INVITE", "SUBSCRIBE", "OPTIONS"] * 500
    flooding = threading.Thread(
        target=flood, args=(worker.port, methods, finals, inbound, worker.alive)
    )
    flooding.start()
    try:
        wait_for(lambda: len(finals) >= 300 or not worker.alive(), 30, what="the flood under way")
        during = worker.send(phone.uri(), "during the flood")
        assert worker.result(during)[1:3] == [200, "OK"]
    finally:
        flooding.join()
    worker.assert_healthy()
    by_method: dict[str, list[int]] = {"INVITE": [], "SUBSCRIBE": [], "OPTIONS": []}
    for branch, code in finals.items():
        by_method[branch.split("-")[2]].append(code)
    # every request answered at once, statelessly refused: no call, no dialog, no media
    assert {m: (len(c), set(c)) for m, c in by_method.items()} == {
        "INVITE": (500, {486}),
        "SUBSCRIBE": (500, {403}),
        "OPTIONS": (500, {200}),
    }
    assert worker.result(worker.send(phone.uri(), "after the flood"))[1:3] == [200, "OK"]
    assert inbound == []  # no NOTIFY (nor anything else) to the Contact an intruder gave
    worker.assert_healthy()
    assert time.monotonic() - started < 300  # only a hang: the flood never ends


# -- fuzz: random answers from a hostile phone ---------------------------------

HEADER_NAMES = [
    b"Via", b"v", b"From", b"To", b"t", b"Call-ID", b"CSeq", b"Content-Length", b"l",
    b"Content-Type", b"Contact", b"WWW-Authenticate", b"Retry-After", b"Warning", b"X-Fuzz",
]  # fmt: skip
MARKER = b"SIP/2.0 299 After the fuzz"  # ends the transaction if pjsip dropped the fuzz
LINE_ENDS = b"\r\n\0"  # pjsip drops a message with NUL anywhere


@st.composite
def answers(draw: st.DrawFn) -> Callable[[bytes], bytes]:
    """request -> a random response: status line, reason bytes, headers, body.

    Mostly well-formed enough for pjsip to match it to deskbot's transaction,
    so that the hostile parts reach the worker; sometimes broken anywhere.
    """

    def usually(strategy: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> Any:
        return draw(odd) if draw(st.integers(0, 4)) == 0 else draw(strategy)

    version = usually(st.just(b"SIP/2.0"), st.sampled_from([b"sip/2.0", b"SIP/3.0", b""]))
    code = usually(
        st.integers(200, 699).map(lambda n: b"%d" % n),  # final: the reason reaches the parent
        st.integers(0, 99999).map(lambda n: b"%d" % n) | st.binary(max_size=5),
    )
    reason = draw(
        st.binary(max_size=300)
        | st.text(max_size=150).map(lambda t: t.encode("utf-8", "surrogatepass"))
        | st.text(st.characters(max_codepoint=255), max_size=300).map(lambda t: t.encode("latin-1"))
    )
    reason = usually(st.just(reason.translate(None, LINE_ENDS)), st.just(reason))
    matching = usually(st.just(True), st.just(False))  # deskbot's Via, From, To, Call-ID, CSeq
    extra = [
        usually(
            st.tuples(
                st.sampled_from([b"X-Fuzz", b"Warning", b"Server"]), st.binary(max_size=80)
            ).map(lambda h: (h[0], h[1].translate(None, LINE_ENDS))),
            st.tuples(
                st.sampled_from(HEADER_NAMES) | st.binary(max_size=12), st.binary(max_size=80)
            ),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    body = draw(st.binary(max_size=200))
    length = usually(st.just(len(body)), st.integers(-1, 5000))

    def answer(request: bytes) -> bytes:
        lines = answer_head(request, version + b" " + code + b" " + reason)
        if not matching:
            lines = lines[:1]
        lines += [name + b": " + value for name, value in extra]
        lines.append(b"Content-Length: %d" % length)
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    return answer


def test_random_answers_from_a_hostile_phone_never_break_the_worker(tmp_path: Path):
    worker = WorkerProcess(tmp_path)
    fuzz: list[Callable[[bytes], bytes]] = []
    phone = HostilePhone(lambda request: [fuzz[-1](request), response(request, MARKER)])
    started = time.monotonic()
    try:

        @settings(
            max_examples=50,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(answers())
        def one_answer(answer: Callable[[bytes], bytes]) -> None:
            fuzz.append(answer)
            _, code, reason, local = worker.result(worker.send(phone.uri()), timeout=10)
            assert isinstance(code, int) and isinstance(local, bool)
            assert isinstance(reason, str) and printable(reason)
            assert len(reason) <= protocol.MAX_REASON_CHARS
            worker.assert_healthy()

        one_answer()
        fuzz.append(lambda request: response(request, b"SIP/2.0 200 OK"))
        assert worker.result(worker.send(phone.uri()))[1:] == [200, "OK", False]
        worker.assert_healthy()
        assert worker.proc.pid == worker.pid
    finally:
        phone.close()
        worker.stop()
    assert time.monotonic() - started < 300  # only a hang: the flood never ends
