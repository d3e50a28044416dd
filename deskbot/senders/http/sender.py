"""deskbot's HTTP push sender: Poly ``/push`` with Digest, Cisco ``/CGI/Execute`` with Basic.

One aiohttp session for every phone (connections kept alive and reused), the
same fair slots and in-flight cap as the SIP agent, and one deadline per send:
no answer in ``timeout`` is 408, reported exactly like a SIP timeout. TLS
(``https://`` phone addresses) checks certificates against the system's CAs,
or ``[push] ca_file``. What a phone answers is untrusted: at most
MAX_ANSWER_BYTES of its body are read, redirects are not followed (a 3xx is
reported), reasons are cut and made printable. Probes stay SIP (OPTIONS).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from typing import Any

import aiohttp
from yarl import URL

from deskbot.directory.snapshot import CISCO_XML, POLY_PUSH, Phone
from deskbot.senders.base import TITLE, Ask, Cause, Delivery, Health
from deskbot.senders.fair import FairSlots
from deskbot.senders.http import digest
from deskbot.senders.http.board import Board, Screen
from deskbot.senders.screens import cisco, poly
from deskbot.senders.screens.xmltext import SoftKey
from deskbot.settings.schema import Push
from deskbot.sipuri import split_hostport

log = logging.getLogger("deskbot.http")

MAX_ANSWER_BYTES = 16 * 1024  # of a phone's answer body; the rest is not read
MAX_REASON_CHARS = 120
FETCH_GRACE = 1.0  # seconds a Cisco phone has, after its answer, to fetch its screen
_CISCO_ERROR = re.compile(rb"<CiscoIPPhoneError\b[^>]*\bNumber\s*=\s*[\"']?(\d{1,3})")
_CISCO_STATUS = re.compile(rb"<ResponseItem\b[^>]*\bStatus\s*=\s*[\"']?(\d{1,3})")


def address(phone: Phone) -> str:
    """The phone's web address: its ``http`` key, else http:// + the host of its SIP URI."""
    if phone.http:
        return phone.http.rstrip("/")
    hostport = phone.uri.removeprefix("sip:").split(";")[0].rpartition("@")[2]
    host, _ = split_hostport(hostport)
    return f"http://{host}"


def printable(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """A phone's reason phrase as reported: printable, one line, bounded."""
    return " ".join("".join(c if c.isprintable() else " " for c in text[: limit * 2]).split())[
        :limit
    ]


class PushError(Exception):
    """A send ended before an answer that counts (the Delivery's code, reason and cause)."""

    def __init__(self, code: int, reason: str, cause: Cause):
        super().__init__(reason)
        self.code, self.reason, self.cause = code, reason, cause


class HttpSender:
    max_body_bytes = 1 << 16  # an HTTP body; each maker's own limit is checked by the relay

    def __init__(
        self,
        push: Push,
        password: str,
        *,
        timeout: float,
        board: Board | None = None,
    ):
        self.push = push
        self._password = password
        self._timeout = push.timeout or timeout
        self.board = board
        self._slots = FairSlots(push.max_in_flight)
        self._session: aiohttp.ClientSession | None = None
        self.in_flight = 0

    @property
    def timeout(self) -> float:
        return self._timeout

    async def start(self) -> None:
        context = ssl.create_default_context(cafile=self.push.ca_file)
        connector = aiohttp.TCPConnector(
            limit=self._slots.most, ssl=context, ttl_dns_cache=300, force_close=False
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # a phone's cookies reach no other phone
            auto_decompress=False,  # a small compressed answer must not inflate
            trust_env=False,  # no proxy from the environment between deskbot and a phone
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def health(self) -> Health:
        return Health(self._session is not None, {"push_in_flight": self.in_flight}, self.in_flight)

    async def send(self, phone: Phone, text: str, ask: Ask | None = None) -> Delivery:
        started = time.perf_counter()
        key = await self._slots.acquire()
        self.in_flight += 1
        waiting: Screen | None = None
        try:
            async with asyncio.timeout(self._timeout):  # from the slot on, as pjsip's timer
                code, reason, cause, waiting = await self._push(phone, text, ask)
        except TimeoutError:
            code, reason, cause = 408, "Request Timeout (no answer from the phone)", Cause.TIMEOUT
        except PushError as exc:
            code, reason, cause = exc.code, exc.reason, exc.cause
        finally:
            self.in_flight -= 1
            self._slots.release(key)
        if waiting is not None:  # a Cisco phone took the push: did it fetch its screen?
            try:
                async with asyncio.timeout(FETCH_GRACE):
                    await waiting.fetched.wait()
                reason = f"{reason}, screen fetched"
            except TimeoutError:
                reason = f"{reason}, screen not fetched yet"
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return Delivery(address(phone), code, reason, elapsed, cause)

    async def probe(self, phone: Phone) -> Delivery:
        """Does the phone's web server answer (any HTTP answer counts; nothing is shown)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                code, reason, _ = await self._request("GET", address(phone) + "/", b"", {})
                cause = Cause.ANSWERED
        except TimeoutError:
            code, reason, cause = 408, "Request Timeout (no answer from the phone)", Cause.TIMEOUT
        except PushError as exc:
            code, reason, cause = exc.code, exc.reason, exc.cause
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return Delivery(address(phone), code, reason, elapsed, cause)

    # -- one push -------------------------------------------------------------
    async def _push(
        self, phone: Phone, text: str, ask: Ask | None
    ) -> tuple[int, str, Cause, Screen | None]:
        """The answer, and the screen the phone is still to fetch (Cisco) if any."""
        keys = (SoftKey(ask.label, ask.url),) if ask else ()
        if phone.format == POLY_PUSH:
            return (*await self._poly(phone, text, keys), None)
        if phone.format == CISCO_XML:
            return await self._cisco(phone, text, keys)
        return 501, f"format {phone.format!r} is not pushed over HTTP", Cause.TRANSPORT, None

    async def _poly(
        self, phone: Phone, text: str, keys: tuple[SoftKey, ...]
    ) -> tuple[int, str, Cause]:
        body = poly.body(text, TITLE.get(), keys).encode()
        url = address(phone) + poly.PATH
        headers = {"Content-Type": poly.CONTENT_TYPE}
        code, reason, answer = await self._request("POST", url, body, headers)
        if code == 401 and answer.get("challenge"):
            try:
                challenge = digest.parse(answer["challenge"])
                path = URL(url).raw_path_qs
                headers["Authorization"] = digest.authorization(
                    challenge, "POST", path, self.push.username, self._password
                )
            except digest.ChallengeError as exc:
                return 401, printable(f"{reason} ({exc})"), Cause.ANSWERED
            code, reason, answer = await self._request("POST", url, body, headers)
        return code, reason, Cause.ANSWERED

    async def _cisco(
        self, phone: Phone, text: str, keys: tuple[SoftKey, ...]
    ) -> tuple[int, str, Cause, Screen | None]:
        if self.board is None:
            return 503, "no [desk] endpoint to serve the Cisco screen from", Cause.TRANSPORT, None
        screen = cisco.screen(text, TITLE.get(), keys).encode("iso-8859-1")
        url, entry = self.board.put(phone.extension, screen, cisco.SCREEN_TYPE)
        headers = {
            "Content-Type": cisco.FORM_TYPE,
            "Authorization": digest.basic(self.push.username, self._password),
        }
        target = address(phone) + cisco.PATH
        code, reason, answer = await self._request(
            "POST", target, cisco.execute(url).encode(), headers, whole=True
        )
        if not 200 <= code < 300:
            return code, reason, Cause.ANSWERED, None
        data: bytes = answer.get("body", b"")
        if error := _CISCO_ERROR.search(data):
            number = int(error.group(1))
            what = cisco.ERRORS.get(number, "error")
            return code, f"CiscoIPPhoneError {number} ({what})", Cause.PHONE_ERROR, None
        status = _CISCO_STATUS.search(data)
        if status is not None and status.group(1) != b"0":
            why = f"CiscoIPPhoneResponse Status {int(status.group(1))}"
            return code, why, Cause.PHONE_ERROR, None
        if lost := cisco.unshowable(text):  # said, not lost silently
            reason = f"{reason}, {lost} character{'s' if lost > 1 else ''} shown as ?"
        return code, reason, Cause.ANSWERED, entry

    async def _request(
        self, method: str, url: str, body: bytes, headers: dict[str, str], whole: bool = False
    ) -> tuple[int, str, dict[str, Any]]:
        """One HTTP request: (code, reason, {"body": its first bytes, "challenge": ...}).

        ``whole``: the body up to MAX_ANSWER_BYTES or its end, however slowly it comes (the
        send's deadline bounds it); else what has come with the first chunk."""
        assert self._session is not None, "HttpSender.start() first"
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                data = await resp.content.read(MAX_ANSWER_BYTES)
                while whole and data and len(data) < MAX_ANSWER_BYTES:
                    more = await resp.content.read(MAX_ANSWER_BYTES - len(data))
                    if not more:
                        break
                    data += more
                answer: dict[str, Any] = {"body": data}
                if resp.status == 401:
                    answer["challenge"] = resp.headers.get("WWW-Authenticate", "")
                return resp.status, printable(resp.reason or ""), answer
        except aiohttp.ClientConnectorCertificateError as exc:
            why = printable(str(exc.certificate_error), 80)
            raise PushError(495, f"TLS certificate not trusted ({why})", Cause.TRANSPORT) from None
        except aiohttp.ClientSSLError as exc:
            raise PushError(525, printable(f"TLS failed ({exc})"), Cause.TRANSPORT) from None
        except aiohttp.ClientConnectorError as exc:
            why = printable(exc.strerror or str(exc.os_error), 80)
            raise PushError(503, f"No connection to the phone ({why})", Cause.TRANSPORT) from None
        except (aiohttp.ClientError, ValueError) as exc:
            # a malformed answer (bad status line, huge headers), a dropped connection
            why = printable(type(exc).__name__, 60)
            raise PushError(502, f"Bad answer from the phone ({why})", Cause.TRANSPORT) from None
