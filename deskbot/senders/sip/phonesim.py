"""Simulated desk phones: real SIP endpoints on UDP that answer like a Snom phone.

A phone has one identity (its extension): a MESSAGE to that user part is shown
on its "screen" and answered 200 OK; any other user part gets 404 Not Found.
An ``infobox`` phone also takes Snom Infobox notifications: a NOTIFY with
``Event: xml`` and ``application/snomxml`` shows its lines (joined by " / ");
a classic phone answers such a NOTIFY 489 Bad Event, as older Snom firmware
does. A ``screen`` phone takes Snom XML screens instead (``snom-xml``): a
NOTIFY with ``Event: xml``, an active ``Subscription-State``,
``application/snomxml`` and a ``SnomIPPhoneText`` body shows its text; if
``presses`` is set, a simulated person at the desk presses the screen's OK
key that many seconds later: a real HTTP GET of the key's URL, as the phone
makes, and the answer (deskbot's "Thank you" screen) is shown in turn.
A phone that is ``unplugged`` receives and never answers (the 408 path).
OPTIONS is answered 200. Used by ``deskbot demo`` and by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger("deskbot.phonesim")

MAX_PAGE = 64 * 1024  # bytes of a fetched page the phone reads
FETCH_TIMEOUT = 5.0  # seconds a key's fetch may take

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
        screen: bool = False,
        presses: float | None = None,
        on_display: Callable[[SimulatedPhone, str], None] | None = None,
    ):
        self.extension = extension
        self.label = label
        self.unplugged = unplugged
        self.infobox = infobox
        self.screen_xml = screen  # takes snom-xml screens (NOTIFY Event: xml, SnomIPPhoneText)
        self.presses = presses  # seconds until the person presses OK; None: nobody does
        self.pressed: list[int] = []  # the HTTP status of each press
        self._pressing: set[asyncio.Task[None]] = set()
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
                self._show(body.decode("utf-8", errors="replace"))
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
        xml_screens = self.infobox or self.screen_xml
        if not xml_screens or _header(headers, "event").lower() != "xml":
            return 489, "Bad Event"
        if user != self.extension:
            return 404, "Not Found"
        if not _header(headers, "content-type").startswith("application/snomxml"):
            return 415, "Unsupported Media Type"
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return 400, "Bad Request"
        if self.screen_xml:
            return self._screen(root, headers)
        lines = [line.findtext("Text") or "" for line in root.iter("Line")]
        if root.tag != "InfoBoxQueue" or not lines:
            return 400, "Bad Request"
        self._show(" / ".join(lines))
        return 200, "OK"

    def _screen(self, root: ET.Element, headers: list[tuple[str, str]]) -> tuple[int, str]:
        """A SnomIPPhoneText pushed by NOTIFY: shown; its OK key pressed later, if asked."""
        if not _header(headers, "subscription-state").startswith("active"):
            return 400, "Bad Request"
        if root.tag != "SnomIPPhoneText" or root.find("Text") is None:
            return 400, "Bad Request"
        self._show(_text_of(root))
        url = next(
            (
                key.findtext("URL") or ""
                for key in root.iter("SoftKeyItem")
                if key.findtext("Label") == "OK"
            ),
            "",
        )
        if url and self.presses is not None:
            task = asyncio.get_running_loop().create_task(self._press(url, self.presses))
            self._pressing.add(task)
            task.add_done_callback(self._pressing.discard)
        return 200, "OK"

    def _show(self, text: str) -> None:
        self.screen.lines.append(text)
        if self.on_display:
            self.on_display(self, text)

    async def _press(self, url: str, after: float) -> None:
        """The person at the desk presses OK: the phone GETs the key's URL, shows the answer."""
        await asyncio.sleep(after)
        if urlsplit(url).scheme not in ("http", "https"):
            return
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, allow_redirects=False) as answer,
            ):
                self.pressed.append(answer.status)
                page = await answer.content.read(MAX_PAGE)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("phone %s: the OK key's fetch failed: %s", self.extension, exc)
            return
        if answer.status == 200:
            with contextlib.suppress(ET.ParseError):
                self._show(_text_of(ET.fromstring(page)))

    def close(self) -> None:
        for task in self._pressing:
            task.cancel()
        if self.transport:
            self.transport.close()


def _text_of(root: ET.Element) -> str:
    """A SnomIPPhoneText's text, its ``<br/>`` lines joined by " / "."""
    shown = root.find("Text")
    if shown is None:
        return ""
    parts = [shown.text or ""] + [br.tail or "" for br in shown if br.tag == "br"]
    return " / ".join(parts)
