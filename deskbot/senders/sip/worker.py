"""The pjsua2 endpoint, alone in a child process (``python -m deskbot.senders.sip.worker``).

pjsua2 aborts the process on several misuses and its polling competes with
asyncio for the GIL, so it lives here. The parent speaks a line protocol of
JSON objects on our stdin/stdout (see ``protocol.py``). This process owns the
endpoint in its main thread; a reader thread only queues commands and wakes
the poll loop with a tiny UDP datagram that pjsip drops silently.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import sys
import threading
import unicodedata
from typing import Any

from deskbot.senders.screens import snom, yealink
from deskbot.senders.sip import infobox, protocol

MAX_SENDS_PER_TURN = 32  # larger bursts overflow the UDP receive buffer
MAX_DRAIN = 64  # extra event polls per turn while events keep coming
TIMER_K_MS = 200  # pjsip's T4 (see create)
MAX_REASONS = 64  # reason phrases remembered once made safe
WAKE = b"\0"  # pjsip ignores datagrams of 32 bytes or less
# kind -> (Content-Type, headers) of its NOTIFY: fixed here, never from what a send carries
NOTIFY: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    protocol.INFOBOX: (infobox.CONTENT_TYPE, infobox.HEADERS),
    protocol.SNOM_XML: (snom.CONTENT_TYPE, snom.HEADERS),
    protocol.YEALINK_XML: (yealink.CONTENT_TYPE, yealink.HEADERS),
}


def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class _PjStr(ctypes.Structure):
    """pjlib's ``pj_str_t``: a pointer and a length, no terminating NUL needed."""

    _fields_ = (("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t))


def _pj_str(data: bytes) -> _PjStr:
    return _PjStr(data, len(data))


class Worker:
    def __init__(self, start: dict[str, Any], out: Any, endpoint: Any = None):
        """`endpoint`: a pjsua2 Endpoint already past libCreate (see main), else made here."""
        import pjsua2 as pj
        from pjsua2 import pjsua2 as P

        self.pj, self.P = pj, P
        self.endpoint = endpoint
        self.start = start
        self.out = out
        self.inbox: collections.deque[dict[str, Any]] = collections.deque()
        self.outbox: list[list[Any]] = []
        self.pending: dict[int, tuple[int, Any]] = {}  # token key -> (send id, token)
        self.messages: dict[int, int] = {}  # MESSAGE's user data -> send id (see message)
        self.message_key = 0  # the last MESSAGE's user data: counts up, never reused
        # tokens of answered requests, reused oldest first (far from a late duplicate)
        self.tokens: collections.deque[tuple[int, Any]] = collections.deque()
        self.reasons: dict[str, str] = {}  # reason phrase as received -> made safe
        self.requests_open = 0  # NOTIFY/OPTIONS whose callback has not come (see shutdown)
        self.stopping = False
        self.wake_addr: tuple[str, int] | None = None
        self.wake_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    # -- output -------------------------------------------------------------
    def emit(self, message: dict[str, Any]) -> None:
        """One protocol line; no string in `message` can make it invalid or split it."""
        self.out.write(protocol.encode(_safe(message)))
        self.out.flush()

    def emit_done(self) -> None:
        """The answers gathered this turn, in one line (reasons made safe as in emit, faster)."""
        plain = str.isascii
        items = [
            [send_id, code, r if plain(r) and r.isprintable() else _safe(r), local]
            for send_id, code, r, local in self.outbox
        ]
        self.outbox = []
        self.out.write(protocol.encode({"op": "done", "items": items}))
        self.out.flush()

    def log(self, level: int, msg: str) -> None:
        self.emit({"op": "log", "level": level, "msg": msg})

    # -- endpoint -----------------------------------------------------------
    def create(self) -> None:
        pj, P, cfg = self.pj, self.P, self.start
        worker = self

        class Writer(pj.LogWriter):  # type: ignore[name-defined]
            def write(self, entry: Any) -> None:
                with contextlib.suppress(Exception):
                    worker.log(int(entry.level), str(entry.msg).rstrip())

        class Account(pj.Account):  # type: ignore[name-defined]
            def onInstantMessageStatus(self, prm: Any) -> None:
                try:
                    worker.on_status(prm)
                except Exception as exc:  # an exception here would lose the answer
                    worker.log(1, f"status callback failed: {exc!r}")

            def onSendRequest(self, prm: Any) -> None:
                try:
                    worker.on_request(prm)
                except Exception as exc:  # an exception here would lose the answer
                    worker.log(1, f"request callback failed: {exc!r}")

            def onIncomingSubscribe(self, prm: Any) -> None:
                # pjsua would accept any presence subscription and NOTIFY whatever
                # Contact the sender gave: refuse, and no NOTIFY goes out.
                prm.code = 403
                prm.reason = "deskbot accepts no subscriptions"

            def onRegState(self, prm: Any) -> None:
                try:
                    info = self.getInfo()
                    worker.emit(
                        {
                            "op": "reg",
                            "code": int(prm.code),
                            "reason": network_text(prm.reason),
                            "active": bool(info.regIsActive),
                        }
                    )
                except Exception as exc:
                    worker.log(1, f"registration callback failed: {exc!r}")

        if self.endpoint is None:
            self.endpoint = pj.Endpoint()
            self.endpoint.libCreate()
        self.ep = self.endpoint
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.threadCnt = 0
        ep_cfg.uaConfig.mainThreadOnly = True
        ep_cfg.uaConfig.userAgent = f"deskbot/{cfg.get('version', '0')}"
        # deskbot takes no calls. With no call slot pjsua answers an INVITE 486
        # statelessly before it creates a dialog or media; otherwise each INVITE
        # opens RTP sockets, and a few dozen exhaust the select() I/O queue
        # (a pjlib assertion aborts the process).
        ep_cfg.uaConfig.maxCalls = 0
        ep_cfg.medConfig.threadCnt = 0
        ep_cfg.medConfig.hasIoqueue = False
        self.writer = Writer()
        ep_cfg.logConfig.writer = self.writer.__disown__()
        ep_cfg.logConfig.level = int(cfg["log_level"])
        ep_cfg.logConfig.consoleLevel = int(cfg["log_level"])
        ep_cfg.logConfig.msgLogging = 1 if cfg["log_level"] >= 5 else 0
        ep_cfg.logConfig.decor = 0
        self.ep.libInit(ep_cfg)
        # Timer F (non-INVITE timeout) follows Timer D in pjsip 2.15; no pjsua2 setting exists.
        # T4 is Timer K: how long a finished UDP transaction stays to absorb repeated
        # answers (RFC 3261: 5 s, about 15 KB each, 150 MB for a 10,000-phone burst).
        # deskbot never repeats a request after its answer, so a phone has nothing to
        # repeat; an answer that still comes late is dropped by pjsip as stray.
        import pjsua2._pjsua2 as native

        ctypes.CDLL(native.__file__).pjsip_tsx_set_timers(
            500, 4000, TIMER_K_MS, int(cfg["timeout_ms"])
        )
        # pjsua's own C call for a MESSAGE (see message). PyDLL keeps the GIL held, as
        # SWIG's calls do: a callback pjsua makes inside the call runs as it would there.
        lib = ctypes.PyDLL(native.__file__)
        self.im_send = lib.pjsua_im_send
        self.im_send.argtypes = (
            ctypes.c_int,  # pjsua_acc_id
            ctypes.POINTER(_PjStr),  # to
            ctypes.POINTER(_PjStr),  # mime type
            ctypes.POINTER(_PjStr),  # content
            ctypes.c_void_p,  # pjsua_msg_data *: none
            ctypes.c_void_p,  # user data: our key, back in onInstantMessageStatus
        )
        self.im_send.restype = ctypes.c_int  # pj_status_t
        self.strerror = lib.pj_strerror
        self.strerror.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
        self.strerror.restype = _PjStr
        self.plain_text = _pj_str(b"text/plain;charset=UTF-8")

        tcfg = pj.TransportConfig()
        tcfg.port = int(cfg["port"])
        if cfg["host"] not in ("0.0.0.0", ""):
            tcfg.boundAddress = cfg["host"]
        kind = P.PJSIP_TRANSPORT_TCP if cfg["transport"] == "tcp" else P.PJSIP_TRANSPORT_UDP
        self.tid = self.ep.transportCreate(kind, tcfg)
        local = self.ep.transportGetInfo(self.tid).localName
        port = int(local.rpartition(":")[2])
        if cfg["transport"] == "udp":
            host = cfg["host"] if cfg["host"] not in ("0.0.0.0", "") else "127.0.0.1"
            self.wake_addr = (host, port)
        else:  # a loopback UDP socket of our own, only for waking the poll loop
            wcfg = pj.TransportConfig()
            wcfg.port = 0
            wcfg.boundAddress = "127.0.0.1"
            wake_tid = self.ep.transportCreate(P.PJSIP_TRANSPORT_UDP, wcfg)
            wake_port = int(self.ep.transportGetInfo(wake_tid).localName.rpartition(":")[2])
            self.wake_addr = ("127.0.0.1", wake_port)
        self.ep.libStart()

        acc_cfg = pj.AccountConfig()
        acc_cfg.idUri = f'"{cfg["display_name"]}" <{cfg["from_uri"]}>'
        acc_cfg.sipConfig.transportId = self.tid
        registrar = cfg.get("registrar")
        if registrar:
            acc_cfg.regConfig.registrarUri = registrar["uri"]
            acc_cfg.regConfig.timeoutSec = 300
            acc_cfg.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", "*", registrar["username"], 0, registrar["password"])
            )
            if registrar.get("proxy"):
                acc_cfg.sipConfig.proxies.append(registrar["proxy"])
        else:
            acc_cfg.regConfig.registrarUri = ""
        self.account = Account()
        self.account.create(acc_cfg, True)
        self.account_id = int(self.account.getId())
        self.emit({"op": "ready", "v": protocol.VERSION, "port": port, "pid": os.getpid()})

    # -- sending ------------------------------------------------------------
    def send(self, send_id: int, uri: str, text: str, kind: str = protocol.MESSAGE) -> None:
        body = text.encode("utf-8")
        if kind not in protocol.KINDS:
            self.outbox.append([send_id, 501, f"Unknown kind of request {kind[:20]!r}", True])
            return
        if len(body) > protocol.MAX_BODY_BYTES:
            self.outbox.append([send_id, 413, "Text too long for one SIP message", True])
            return
        if len(self.pending) + len(self.messages) >= protocol.MAX_PENDING:
            self.outbox.append([send_id, 503, "Too many messages in flight", True])
            return
        if kind == protocol.MESSAGE:
            self.message(send_id, uri, text)
        elif kind in NOTIFY:
            content_type, headers = NOTIFY[kind]
            self.request(send_id, "NOTIFY", uri, content_type, text, headers)
        else:
            self.request(send_id, "OPTIONS", uri)

    def token(self) -> tuple[int, Any]:
        """A (key, token) for a request's userData: a freed one again, else a new one (a
        SWIG object each send cost more than the rest of the Python around a MESSAGE)."""
        if len(self.tokens) > protocol.MAX_PENDING // 4:
            return self.tokens.popleft()
        token = self.P.SipHeader()
        return int(token.this), token

    def answered(self, key: int) -> int | None:
        """The send id of the request with this token (None: not ours, or answered)."""
        entry = self.pending.pop(key, None)
        if entry is None:
            return None
        self.tokens.append((key, entry[1]))
        return entry[0]

    def message(self, send_id: int, uri: str, text: str) -> None:
        """A MESSAGE by ``pjsua_im_send``, the call pjsua2's ``Buddy.sendInstantMessage``
        makes, from the same account: the same request, routes and authentication, without
        a buddy made, read and deleted around each one (a third of the worker's CPU per
        MESSAGE). Its answer comes to on_status with ``key`` as user data."""
        self.message_key += 1
        key = self.message_key
        self.messages[key] = send_id
        to, content = uri.encode(), text.encode()
        status = self.im_send(
            self.account_id, _pj_str(to), self.plain_text, _pj_str(content), None, key
        )
        # not sent; pjsua may have answered it already, through on_status (a transport
        # error inside the call): then it is not answered again
        if status != 0 and self.messages.pop(key, None) is not None:
            self.outbox.append([send_id, 503, self.error_text(status), True])

    def error_text(self, status: int) -> str:
        """pjlib's words for a status code ("Invalid URI (PJSIP_EINVALIDURI)"), as the
        phones' reasons are made safe."""
        buffer = ctypes.create_string_buffer(160)
        words = self.strerror(status, buffer, len(buffer))
        text = ctypes.string_at(words.ptr, words.slen).decode("utf-8", "replace")
        return network_text(text) or f"Local error {status}"

    def request(
        self,
        send_id: int,
        method: str,
        uri: str,
        content_type: str = "",
        body: str = "",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """An out-of-dialog request (NOTIFY, OPTIONS); its answer comes to on_request."""
        pj = self.pj
        key, token = self.token()
        prm = pj.SendRequestParam()
        prm.method = method
        prm.txOption.targetUri = uri
        if body:
            prm.txOption.contentType = content_type
            prm.txOption.msgBody = body
        for name, value in headers:
            header = pj.SipHeader()
            header.hName, header.hValue = name, value
            prm.txOption.headers.append(header)
        prm.userData = token
        self.pending[key] = (send_id, token)
        self.requests_open += 1  # counted even if it raises: pjsua may hold a transaction
        try:
            self.account.sendRequest(prm)
        except pj.Error as exc:
            self.answered(key)
            self.outbox.append([send_id, 503, _reason(exc), True])

    def on_request(self, prm: Any) -> None:
        self.requests_open = max(0, self.requests_open - 1)
        send_id = self.answered(int(prm.userData))
        if send_id is None:
            return
        try:
            tsx_state = prm.e.body.tsxState
            tsx = tsx_state.tsx
            remote = bool(tsx_state.src.rdata.srcAddress)  # none: our own stack answered
            answer = [send_id, int(tsx.statusCode), self.reason(tsx.statusText), not remote]
        except Exception as exc:  # still answer the send: it must not wait for a timer
            self.log(1, f"unreadable answer: {exc!r}")
            answer = [send_id, 500, "Unreadable answer from the phone", False]
        self.outbox.append(answer)

    def on_status(self, prm: Any) -> None:
        send_id = self.messages.pop(int(prm.userData or 0), None)
        if send_id is None:
            return
        try:
            # no source address: the answer was made by our own stack (a timeout, say)
            answer = [send_id, int(prm.code), self.reason(prm.reason), not prm.rdata.srcAddress]
        except Exception as exc:  # still answer the send: it must not wait for a timer
            self.log(1, f"unreadable answer: {exc!r}")
            answer = [send_id, 500, "Unreadable answer from the phone", False]
        self.outbox.append(answer)

    def reason(self, raw: Any) -> str:
        """A reason phrase made safe (network_text), remembered: phones say "OK" again and
        again. A bounded number are kept, so a hostile phone cannot grow this."""
        text = self.reasons.get(raw) if isinstance(raw, str) else None
        if text is None:
            text = network_text(raw)
            if isinstance(raw, str) and len(self.reasons) < MAX_REASONS:
                self.reasons[raw] = text
        return text

    def handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "send":
            for send_id, uri, text, *kind in message["items"]:
                self.send(int(send_id), str(uri), str(text), str(kind[0]) if kind else "message")
        elif op == "stop":
            self.stopping = True

    def run(self) -> None:
        while not self.stopping:
            handled = self.ep.libHandleEvents(10 if self.pending or self.messages else 50)
            # take every answer already waiting before writing them back in one line:
            # a burst is then a few writes to the parent, not one per answer
            for _ in range(MAX_DRAIN):
                if handled <= 0:
                    break
                handled = self.ep.libHandleEvents(0)
            budget = MAX_SENDS_PER_TURN
            while self.inbox and budget > 0:
                message = self.inbox[0]
                if message.get("op") == "send" and len(message["items"]) > budget:
                    items = message["items"]
                    self.handle({"op": "send", "items": items[:budget]})
                    message["items"] = items[budget:]
                    budget = 0
                    break
                self.inbox.popleft()
                budget -= len(message.get("items", ())) or 1
                self.handle(message)
            if self.outbox:
                self.emit_done()
        self.shutdown()

    def wake(self) -> None:
        if self.wake_addr:
            with contextlib.suppress(OSError):
                self.wake_sock.sendto(WAKE, self.wake_addr)

    def shutdown(self) -> None:
        waiting = [send_id for send_id, _token in self.pending.values()]
        for send_id in [*waiting, *self.messages.values()]:
            self.outbox.append([send_id, 0, "SIP agent stopped before the phone answered", True])
        if self.outbox:
            self.emit_done()
        self.pending.clear()
        self.messages.clear()
        if not self.requests_open:
            self.account.shutdown()
        # else: libDestroy ends those transactions and calls onSendRequest, which pjsua
        # asserts (abort) on a deleted account: keep it until libDestroy removes it
        self.ep.libDestroy(self.P.PJSUA_DESTROY_NO_RX_MSG)
        self.emit({"op": "stopped"})


def _reason(exc: BaseException) -> str:
    """A pjsua2 error -> its short reason, like 'Address already in use'."""
    reason = str(getattr(exc, "reason", "") or exc)
    return re.sub(r"\s*\(status=\d+\)\s*$", "", reason).strip()[:120] or "Local error"


_UNPRINTABLE = frozenset(("Cc", "Cf", "Cs", "Co", "Zl", "Zp"))


def network_text(value: object, limit: int = protocol.MAX_REASON_CHARS, keep: str = "") -> str:
    """Text from the network (through SWIG) -> printable, bounded text for the parent.

    SWIG hands over bytes that are not UTF-8 as lone surrogates (surrogateescape);
    those bytes are read as Latin-1 instead. Control and format characters
    (terminal escapes, bidi overrides, NUL, ...) become spaces, except those in
    `keep`; without `keep`, runs of whitespace collapse to one space.
    """
    text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # surrogates that are no escaped bytes
            raw = text.encode("utf-8", "replace")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    if not text.isprintable():
        text = "".join(
            " " if c not in keep and unicodedata.category(c) in _UNPRINTABLE else c for c in text
        )
    if not keep:
        text = " ".join(text.split())
    return text[:limit]


def _safe(value: Any) -> Any:
    """A message with every string made safe (log messages keep their line breaks)."""
    if isinstance(value, str):
        return network_text(value, protocol.MAX_LOG_CHARS, keep="\n\t")
    if isinstance(value, bool | int | float | None):
        return value
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return network_text(value, protocol.MAX_LOG_CHARS)


def _reader(worker: Worker, stdin: Any) -> None:
    for line in stdin:
        try:
            worker.inbox.append(json.loads(line))
        except ValueError:
            continue
        worker.wake()
    worker.inbox.append({"op": "stop"})  # parent gone: stop cleanly
    worker.wake()


def main() -> None:
    _die_with_parent()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # also when sent to the whole
        signal.signal(sig, signal.SIG_IGN)  # process group: the parent stops us over the pipe
    # pjlib prints a banner on stdout before any log setting applies: keep the
    # protocol on a private copy of stdout and send fd 1 to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    # Everything that needs no settings happens before they come: the parent is
    # still loading its config meanwhile (see spawn.py).
    import pjsua2 as pj

    endpoint = pj.Endpoint()
    endpoint.libCreate()
    first = stdin.readline()
    if not first:
        os._exit(0)  # the parent changed its mind (nothing to send)
    start = json.loads(first)
    worker = Worker(start, out, endpoint)
    try:
        worker.create()
    except Exception as exc:
        worker.emit({"op": "error", "msg": _reason(exc)})
        out.flush()
        os._exit(3)
    threading.Thread(target=_reader, args=(worker, stdin), daemon=True).start()
    worker.run()
    out.flush()
    os._exit(0)  # skip interpreter teardown: pjsua2 objects must not be freed again


if __name__ == "__main__":
    main()
