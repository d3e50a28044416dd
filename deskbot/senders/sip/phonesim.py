"""Simulated desk phones: real SIP endpoints on UDP that answer like a Snom phone.

A phone has one identity (its extension): a MESSAGE to that user part is shown
on its "screen" and answered 200 OK; any other user part gets 404 Not Found.
An ``infobox`` phone also takes Snom Infobox notifications: a NOTIFY with
``Event: xml`` and ``application/snomxml`` shows its lines (joined by " / ");
a classic phone answers such a NOTIFY 489 Bad Event, as older Snom firmware
does. A phone that is ``unplugged`` receives and never answers (the 408 path).
OPTIONS is answered 200. Used by ``deskbot demo`` and by the tests.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

_COPY = ("via", "from", "to", "call-id", "cseq")
_SHORT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "l": "content-length",
    "c": "content-type",
}


@dataclass
class Screen:
    """What the phone displays: the last text, and every text received."""

    lines: list[str] = field(default_factory=list)

    @property
    def last(self) -> str:
        return self.lines[-1] if self.lines else ""


def parse_request(data: bytes) -> tuple[str, str, list[tuple[str, str]], bytes] | None:
    """A SIP request -> (method, request-uri, headers, body); None if it is not one."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("SIP/2.0"):
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            key = name.strip().lower()
            headers.append((_SHORT.get(key, key), value.strip()))
    length = next((int(v) for k, v in headers if k == "content-length" and v.isdigit()), 0)
    return parts[0], parts[1], headers, body[:length]


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k == name), "")


def response(code: int, reason: str, headers: list[tuple[str, str]], tag: str) -> bytes:
    out = [f"SIP/2.0 {code} {reason}"]
    for key, value in headers:
        if key in _COPY:
            if key == "to" and ";tag=" not in value:
                value = f"{value};tag={tag}"
            out.append(f"{key.title() if key != 'call-id' else 'Call-ID'}: {value}")
    out += ["Server: deskbot-phonesim", "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode()


class SimulatedPhone(asyncio.DatagramProtocol):
    def __init__(
        self,
        extension: str,
        label: str = "",
        *,
        unplugged: bool = False,
        infobox: bool = False,
        on_display: Callable[[SimulatedPhone, str], None] | None = None,
    ):
        self.extension = extension
        self.label = label
        self.unplugged = unplugged
        self.infobox = infobox
        self.on_display = on_display
        self.screen = Screen()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.answers: list[int] = []
        self._seen: dict[tuple[str, str], bytes] = {}  # retransmissions get the same answer

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SimulatedPhone:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        assert self.transport is not None
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def uri(self, user: str | None = None) -> str:
        return f"sip:{user or self.extension}@127.0.0.1:{self.port}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = parse_request(data)
        if request is None or self.unplugged or self.transport is None:
            return
        method, uri, headers, body = request
        key = (_header(headers, "call-id"), _header(headers, "cseq"))
        if key in self._seen:
            self.transport.sendto(self._seen[key], addr)
            return
        user = re.match(r"^sips?:([^@;?]+)@", uri)
        tag = f"sim{self.extension}"
        if method == "MESSAGE":
            if user and user.group(1) == self.extension:
                text = body.decode("utf-8", errors="replace")
                self.screen.lines.append(text)
                if self.on_display:
                    self.on_display(self, text)
                code, reason = 200, "OK"
            else:
                code, reason = 404, "Not Found"
        elif method == "NOTIFY":
            code, reason = self._notify(user.group(1) if user else "", headers, body)
        elif method == "OPTIONS":
            code, reason = 200, "OK"
        elif method == "ACK":
            return
        else:
            code, reason = 405, "Method Not Allowed"
        self.answers.append(code)
        answer = response(code, reason, headers, tag)
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = answer
        self.transport.sendto(answer, addr)

    def _notify(self, user: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, str]:
        if not self.infobox or _header(headers, "event").lower() != "xml":
            return 489, "Bad Event"
        if user != self.extension:
            return 404, "Not Found"
        if not _header(headers, "content-type").startswith("application/snomxml"):
            return 415, "Unsupported Media Type"
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return 400, "Bad Request"
        lines = [line.findtext("Text") or "" for line in root.iter("Line")]
        if root.tag != "InfoBoxQueue" or not lines:
            return 400, "Bad Request"
        text = " / ".join(lines)
        self.screen.lines.append(text)
        if self.on_display:
            self.on_display(self, text)
        return 200, "OK"

    def close(self) -> None:
        if self.transport:
            self.transport.close()
