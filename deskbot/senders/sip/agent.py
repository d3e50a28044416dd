"""deskbot's SIP agent: starts, feeds and supervises the pjsua2 worker process.

The rest of the program sees the ``Sender`` protocol: ``await agent.send(phone, text)
-> Delivery`` and ``await agent.probe(phone)``. The phone's ``format`` picks the
request here: a SIP MESSAGE, or a NOTIFY carrying a maker's screen (Snom Infobox,
Snom XML, Yealink XML) that ``deskbot.senders.screens`` builds; a probe is an OPTIONS.
If the worker dies, every message it had is reported as unconfirmed (code 0),
the worker is restarted with back-off, and the next send works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from deskbot import __version__
from deskbot.directory.snapshot import Phone
from deskbot.senders import fair
from deskbot.senders.base import Ask, Cause, Delivery, Health, SenderError
from deskbot.senders.fair import FairSlots
from deskbot.senders.sip import protocol
from deskbot.senders.sip.sends import Batch, BatchSend, Send, request_of
from deskbot.senders.sip.spawn import WORKER_COMMAND, WorkerProcess, spawn_worker
from deskbot.settings.schema import Sip
from deskbot.sipuri import split_hostport

log = logging.getLogger("deskbot.sip")
pjsip_log = logging.getLogger("deskbot.sip.pjsip")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 2.0
MAX_START_FAILURES = 3  # in a row, before the agent gives up instead of looping
BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)
SAFETY_NET = 3.0  # seconds past sip.timeout before a send the worker never answered is 408
UNCONFIRMED = "Not confirmed: the SIP agent restarted while the message was out"


class AgentError(SenderError):
    """The SIP agent could not start; the message says why and what to check."""


@dataclass
class AgentState:
    alive: bool = False
    failed: str = ""  # why the agent gave up, when it did
    port: int = 0
    pid: int = 0
    restarts: int = 0
    registration: dict[str, Any] = field(default_factory=dict)


class SipAgent:
    max_body_bytes = protocol.MAX_BODY_BYTES

    def __init__(
        self,
        sip: Sip,
        password: str | None = None,
        *,
        worker_command: Sequence[str] = WORKER_COMMAND,
        worker: WorkerProcess | None = None,
    ):
        """`worker`: a process from `spawn_worker`, already importing pjsua2, for the first run."""
        self.sip = sip
        self._spare = worker
        self.state = AgentState()
        self._password = password
        self._worker_command = tuple(worker_command)
        self._slots = _slots(sip)
        # send id -> the send out to the worker, in the order sent
        self._futures: dict[int, Send] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._next_id = 0
        self._batch: list[list[Any]] = []
        self._proc: WorkerProcess | None = None
        self._ready = asyncio.Event()
        self._registered = asyncio.Event()  # set at each REGISTER answer of the current worker
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._first_start: asyncio.Future[None] | None = None

    # -- life cycle ---------------------------------------------------------
    async def start(self) -> None:
        """Start the worker; raise AgentError if it cannot start (port taken, ...)."""
        self._first_start = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(self._supervise(), name="sip-supervisor")
        try:
            await self._first_start
        except AgentError:
            await self._supervisor
            raise

    async def close(self, *, orderly: bool = True) -> None:
        """Finish in-flight sends (up to the SIP timeout), then stop the worker.

        ``orderly=False`` is for a caller about to exit (a one-shot command
        without a registration, with nothing to undo at the far end): once
        nothing is in flight the worker is killed, without ending pjsua or
        waiting for the process to be gone (5 ms or more on a busy machine).
        """
        self._closing = True
        if self._futures:
            pending = {send.waitable() for send in self._futures.values()}
            await asyncio.wait(pending, timeout=self.sip.timeout + 1.0)
        proc = self._proc
        if not orderly:
            for process in (proc, self._spare):
                if process is not None and process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            self._fail_pending("SIP agent stopped before the phone answered")
            return
        if proc and proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                assert proc.stdin is not None
                proc.stdin.write(protocol.encode({"op": "stop"}))
                await proc.stdin.drain()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("SIP worker did not stop in %.0f s: killing it", STOP_TIMEOUT)
                proc.kill()
                await proc.wait()
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._spare:  # started for a send that never came
            with contextlib.suppress(ProcessLookupError):
                self._spare.kill()
            await self._spare.wait()
            self._spare = None
        self._fail_pending("SIP agent stopped before the phone answered")

    async def __aenter__(self) -> SipAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_registration(self, timeout: float) -> dict[str, Any]:
        """The first REGISTER answer of the running worker ({} if none came in time)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._registered.wait(), timeout)
        return self.state.registration

    @property
    def in_flight(self) -> int:
        return len(self._futures)

    @property
    def timeout(self) -> float:
        return self.sip.timeout

    def health(self) -> Health:
        state = self.state
        details: dict[str, Any] = {"alive": state.alive, "restarts": state.restarts}
        details["port"] = state.port
        if state.failed:
            details["error"] = state.failed
        alive = state.alive
        if self.sip.registrar:
            details["registration"] = state.registration or {"active": False, "code": None}
            alive = alive and bool(state.registration.get("active"))
        return Health(alive, details, self.in_flight, state.restarts)

    # -- sending ------------------------------------------------------------
    async def send(self, phone: Phone, text: str, ask: Ask | None = None) -> Delivery:
        request = request_of(phone, text, ask)
        if isinstance(request, Delivery):
            return request
        return await self._request(*request)

    async def send_all(
        self,
        items: Sequence[tuple[Phone, str, Ask | None]],
        on_answer: Callable[[int, Delivery], None],
    ) -> list[Delivery]:
        """``send`` to every phone of one fan-out in one call: no task or future per phone.

        ``on_answer(i, delivery)`` is called once for each answer, as it comes, with
        ``items[i]``'s index; the answers are returned in the order of ``items`` once all
        are in. Cancelled, the answers still out are dropped (their slots come back).
        """
        started = time.perf_counter()
        batch = Batch(len(items), on_answer)
        key = fair.COMMAND.get()
        sends: list[BatchSend] = []
        for index, (phone, text, ask) in enumerate(items):
            request = request_of(phone, text, ask)
            if isinstance(request, Delivery):
                batch.answer(index, request)
            else:
                self._next_id += 1
                uri, body, kind = request
                sends.append(BatchSend(self, self._next_id, key, uri, body, kind, started,
                                        batch, index))  # fmt: skip
        if self.state.failed:
            why = f"SIP agent is down: {self.state.failed}"
            for send in sends:
                batch.answer(send.index, Delivery(send.uri, 503, why, 0.0, DOWN))
        elif sends:
            if not self._ready.is_set():
                await self._ready.wait()  # cancelled here: nothing was sent
            slots, waits = self._slots, False
            for send in sends:  # the first ones while slots are free, the rest in line
                if not waits and slots.take(key):
                    self._out(send)
                else:
                    waits = True
                    slots.enqueue(key, send)
        try:
            return await batch.future
        except asyncio.CancelledError:
            batch.cancelled = True
            self._slots.drop_gone(key)
            raise

    async def probe(self, phone: Phone) -> Delivery:
        """A SIP OPTIONS: does the phone answer at all (nothing is displayed)."""
        return await self._request(phone.uri, "", protocol.OPTIONS)

    async def _request(self, uri: str, body: str, kind: str) -> Delivery:
        started = time.perf_counter()  # the wait for a slot is part of what the phone took
        if self.state.failed:
            return Delivery(uri, 503, f"SIP agent is down: {self.state.failed}", 0.0, DOWN)
        if not self._ready.is_set():
            await self._ready.wait()
        # No task waits for a slot: the send is queued here, and a slot freed by an
        # answer puts it straight into the next batch to the worker (on a broadcast,
        # a future and a wake-up less per phone).
        key = fair.COMMAND.get()
        self._next_id += 1
        send = Send(self, self._next_id, key, uri, body, kind, started)
        future = send.future = asyncio.get_running_loop().create_future()
        if self._slots.take(key):
            self._out(send)
        else:
            self._slots.enqueue(key, send)
        try:
            return await future
        except asyncio.CancelledError:
            if send.queued:
                self._slots.forget(key, send)
            raise

    def _out(self, send: Send) -> None:
        """A send holding its slot: into the next batch to the worker."""
        send.queued = False
        if self.state.failed:
            self._slots.release(send.key)
            why = f"SIP agent is down: {self.state.failed}"
            send.answer(Delivery(send.uri, 503, why, 0.0, DOWN))
            return
        # a safety net only: pjsip itself answers 408 after sip.timeout
        send.give_up = time.perf_counter() + self.sip.timeout + SAFETY_NET
        self._futures[send.id] = send
        if not self._batch and self._ready.is_set():
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append([send.id, send.uri, send.body, send.kind])
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.sip.timeout + SAFETY_NET, self._sweep)

    def _flush(self) -> None:
        if not self._ready.is_set():  # a new worker is starting: sent once it is ready
            return
        batch, self._batch = self._batch, []
        proc = self._proc
        if not batch:
            return
        futures = self._futures
        batch = [item for item in batch if item[0] in futures]  # not given up meanwhile
        if proc is None or proc.stdin is None or proc.returncode is not None:
            for item in batch:
                self._resolve(item[0], 0, UNCONFIRMED, True)
            return
        try:
            proc.stdin.write(protocol.encode({"op": "send", "items": batch}))
        except (BrokenPipeError, ConnectionResetError):
            for item in batch:
                self._resolve(item[0], 0, UNCONFIRMED, True)

    def _sweep(self) -> None:
        """Give up the sends the worker never answered (oldest first: one timer for all)."""
        self._sweeper = None
        now = time.perf_counter()
        while self._futures:
            send_id, send = next(iter(self._futures.items()))
            if send.give_up > now:
                loop = asyncio.get_running_loop()
                self._sweeper = loop.call_later(send.give_up - now, self._sweep)
                return
            self._resolve(send_id, 408, "Request Timeout (no answer from the SIP agent)", True)

    def _resolve(self, send_id: int, code: int, reason: str, local: bool) -> None:
        send = self._futures.pop(send_id, None)
        if send is None:
            return
        if not send.done():
            elapsed = (time.perf_counter() - send.started) * 1000
            cause = Cause.ANSWERED if not local else _cause(code, reason)
            send.answer(Delivery(send.uri, code, reason, round(elapsed, 1), cause))
        self._slots.release(send.key)  # the next queued send joins the batch

    def abandon(self) -> None:
        """Report every message still out as not confirmed, at once (the user is leaving)."""
        self._fail_pending("Not confirmed: deskbot was stopped before the phone answered")

    def _fail_pending(self, reason: str) -> None:
        for send_id in list(self._futures):
            self._resolve(send_id, 0, reason, True)

    # -- supervision --------------------------------------------------------
    async def _supervise(self) -> None:
        failures = 0
        while not self._closing:
            started = time.monotonic()
            error = await self._run_worker()
            if self._closing:
                break
            self._fail_pending(UNCONFIRMED)
            ran_for = time.monotonic() - started
            failures = failures + 1 if error.startswith("start:") else 0
            first = self._first_start is not None and not self._first_start.done()
            if first and error.startswith("start: error:"):  # the worker said why: don't retry
                self._give_up(error.removeprefix("start: error: "))
                return
            if failures >= MAX_START_FAILURES:
                self._give_up(
                    f"the SIP worker died at start-up {failures} times in a row "
                    f"({error.removeprefix('start: ')})"
                )
                return
            self.state.restarts += 1
            delay = BACKOFF[min(failures, len(BACKOFF) - 1)] if ran_for < 30 else BACKOFF[0]
            log.error("SIP worker %s; restarting in %.1f s", error, delay)
            await asyncio.sleep(delay)

    def _give_up(self, why: str) -> None:
        self.state.failed = why
        self._fail_pending(f"SIP agent is down: {why}")
        if self._first_start and not self._first_start.done():
            log.debug("SIP agent could not start: %s", why)  # start() raises: the caller says it
            self._first_start.set_exception(AgentError(why))
        else:
            log.error("SIP agent gave up: %s", why)

    async def _run_worker(self) -> str:
        """Run one worker until it exits; return why it ended ('start: ...' if it never ran)."""
        proc, self._spare = self._spare or await spawn_worker(self._worker_command), None
        self._proc = proc
        assert proc.stdin and proc.stdout and proc.stderr
        stderr_task = asyncio.create_task(self._drain_stderr(proc.stderr))
        proc.stdin.write(protocol.encode(self._start_settings()))
        ready = False
        try:
            async with asyncio.timeout(START_TIMEOUT):
                ready, error = await self._await_ready(proc)
            if not ready:
                return f"start: {error}"
            while line := await proc.stdout.readline():
                self._on_message(protocol.decode(line))
            code = await proc.wait()
            return f"exited with {_describe_exit(code)}"
        except TimeoutError:
            proc.kill()
            return "start: no answer from the SIP worker"
        finally:
            self._ready.clear()
            self._registered.clear()
            self.state.alive = False
            self.state.registration = {}
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
            await stderr_task

    async def _await_ready(self, proc: WorkerProcess) -> tuple[bool, str]:
        """Wait for the worker's ready; pjsip's lines until then are logged once it is known
        how start-up went: a first start that fails is the caller's to report (port in use)."""
        held: list[dict[str, Any]] = []
        ready = False
        try:
            ready, error = await self._read_until_ready(proc, held)
        finally:  # also when the start-up times out
            quiet = not ready and self._first_start is not None and not self._first_start.done()
            for message in held:
                if quiet and message.get("op") == "log":
                    pjsip_log.debug("%s", message.get("msg", ""))
                else:
                    self._on_message(message)
        if ready:
            log.info(
                "SIP agent ready on %s port %d (pid %d)",
                self.sip.transport.upper(),
                self.state.port,
                self.state.pid,
            )
            if self._first_start and not self._first_start.done():
                self._first_start.set_result(None)
        return ready, error

    async def _read_until_ready(
        self, proc: WorkerProcess, held: list[dict[str, Any]]
    ) -> tuple[bool, str]:
        assert proc.stdout
        while line := await proc.stdout.readline():
            message = protocol.decode(line)
            if message.get("op") == "ready":
                if message.get("v") != protocol.VERSION:
                    return False, f"error: worker speaks protocol {message.get('v')}"
                self.state.alive = True
                self.state.port = int(message["port"])
                self.state.pid = int(message["pid"])
                self._ready.set()
                if self._batch:  # granted while no worker was ready
                    asyncio.get_running_loop().call_soon(self._flush)
                return True, ""
            if message.get("op") == "error":
                return False, f"error: {message.get('msg')}"
            held.append(message)
        code = await proc.wait()
        return False, f"exited with {_describe_exit(code)}"

    def _on_message(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "done":
            for send_id, code, reason, local in message["items"]:
                self._resolve(int(send_id), int(code), str(reason), bool(local))
        elif op == "log":
            level = int(message.get("level", 3))
            py_level = {
                0: logging.CRITICAL,
                1: logging.ERROR,
                2: logging.WARNING,
                3: logging.INFO,
            }.get(level, logging.DEBUG)
            pjsip_log.log(py_level, "%s", message.get("msg", ""))
        elif op == "reg":
            self.state.registration = {k: message.get(k) for k in ("code", "reason", "active")}
            self._registered.set()
            level = logging.INFO if message.get("active") else logging.WARNING
            log.log(level, "registration: %s %s", message.get("code"), message.get("reason"))

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            log.debug("worker: %s", line.decode(errors="replace").rstrip())

    def _start_settings(self) -> dict[str, Any]:
        host, port = _split_listen(self.sip.listen)
        registrar = None
        if self.sip.registrar:
            r = self.sip.registrar
            registrar = {
                "uri": r.uri,
                "username": r.username,
                "password": self._password or "",
                "proxy": r.proxy,
            }
        # pjsip logs message bodies at level 3 and above: only when debugging
        level = 5 if pjsip_log.isEnabledFor(logging.DEBUG) else 2
        return {
            "v": protocol.VERSION,
            "version": __version__,
            "host": host,
            "port": port,
            "transport": self.sip.transport,
            "from_uri": self.sip.from_uri,
            "display_name": self.sip.display_name,
            "timeout_ms": int(self.sip.timeout * 1000),
            "registrar": registrar,
            "log_level": level,
        }


DOWN = Cause.AGENT_DOWN


def _slots(sip: Sip) -> FairSlots:
    """max_in_flight for a lone command, a fifth more for the others' sends; over TCP the
    reserve comes out of max_in_flight (pjsip's sockets run out above MAX_TCP)."""
    total = sip.max_in_flight
    reserve = max(1, total // 5)
    if sip.transport == "tcp":
        total = max(1, min(total, protocol.MAX_TCP - reserve))
    return FairSlots(total, reserve)


def _cause(code: int, reason: str) -> Cause:
    """The worker's (code, reason) of an answer made by our own stack -> why it ended."""
    if code == 0:
        return Cause.UNCONFIRMED
    if code == 408:
        return Cause.TIMEOUT
    if code == 413:
        return Cause.TOO_LONG
    if "ETOOMANY" in reason or reason == "Too many messages in flight":
        return Cause.TOO_MANY
    return Cause.TRANSPORT


def _split_listen(listen: str) -> tuple[str, int]:
    host, port = split_hostport(listen)
    return host.strip("[]"), port or 0


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"
