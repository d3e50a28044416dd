"""Fake HTTP desk phones on 127.0.0.1: Poly's /push and Cisco's /CGI/Execute, as documented.

One aiohttp server (in its own thread, with its own loop) plays any number of
phones, each under a path prefix: ``http = "http://127.0.0.1:PORT/486"``.

- Poly (``/EXT/push``): HTTP Digest (MD5, qop=auth) for the push account;
  without it a 401 challenge. A body must be a ``PolycomIPPhone`` with one
  ``Data`` element, at most 1 KB, sent as ``application/x-com-polycom-spipx``;
  else 400. 200 once it is taken (Poly: the answer says nothing of the screen).
- Cisco (``/EXT/CGI/Execute``): HTTP Basic; a form field ``XML=`` holding a
  ``CiscoIPPhoneExecute``. Wrong credentials: ``CiscoIPPhoneError Number="4"``;
  unparsable XML: Number="1". Else the phone GETs every ``ExecuteItem`` URL,
  insists on a ``CiscoIPPhoneText`` in ISO-8859-1, and answers a
  ``CiscoIPPhoneResponse`` with ``Status="0"`` for each item it fetched.

``behave[ext]`` makes a phone hostile: "silent" (never answers), "huge"
(an endless body), "slow" (a body dribbled out), "html500" (an HTML error
page), "redirect" (a 302 to elsewhere), "teapot" (418 with an 800-character reason).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import ssl
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

REALM = "PolycomSPIP"


@dataclass
class Shown:
    extension: str
    maker: str
    title: str
    lines: list[str]
    raw: bytes


@dataclass
class HttpPhones:
    username: str = "deskbot"
    password: str = "push-secret"
    behave: dict[str, str] = field(default_factory=dict)
    shown: list[Shown] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (extension, why)
    fetched: list[str] = field(default_factory=list)  # every URL a Cisco phone fetched
    fetch_answers: list[int] = field(default_factory=list)
    requests: int = 0
    ssl_context: ssl.SSLContext | None = None
    port: int = 0

    def start(self) -> HttpPhones:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "fake HTTP phones did not start"
        return self

    def url(self, extension: str) -> str:
        scheme = "https" if self.ssl_context else "http"
        host = "localhost" if self.ssl_context else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}/{extension}"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    # -- the server -----------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        self._nonces: set[str] = set()
        self._client = ClientSession(timeout=ClientTimeout(total=5))
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/{ext}/push", self._poly)
        app.router.add_post("/{ext}/CGI/Execute", self._cisco)
        app.router.add_get("/{ext}/", self._root)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stopping.wait()
        await self._client.close()
        await runner.cleanup()

    async def _hostile(self, request: web.Request, ext: str) -> web.StreamResponse | None:
        how = self.behave.get(ext, "")
        if how == "silent":  # until the test ends
            await self._stopping.wait()
            return web.Response(status=503)
        if how == "huge":
            resp = web.StreamResponse(status=200)
            await resp.prepare(request)
            chunk = b"<html>" + b"x" * 65536
            for _ in range(2000):  # 128 MB if anybody read it all
                await resp.write(chunk)
            return resp
        if how == "slow":
            resp = web.StreamResponse(status=200)
            resp.content_length = 1000
            await resp.prepare(request)
            for _ in range(1000):
                if self._stopping.is_set():
                    break
                await resp.write(b"x")
                await asyncio.sleep(0.5)
            return resp
        if how == "html500":
            return web.Response(
                status=500,
                reason="Internal Server Error",
                text="<html><body><h1>500</h1>\x1b[31m</body></html>",
                content_type="text/html",
            )
        if how == "redirect":
            raise web.HTTPFound("http://198.51.100.7/elsewhere")
        if how == "teapot":
            return web.Response(status=418, reason="I'm a teapot " + "tea " * 200)
        return None

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>phone</html>", content_type="text/html")

    # -- Poly -------------------------------------------------------------------
    def _challenge(self) -> web.Response:
        nonce = secrets.token_hex(16)
        self._nonces.add(nonce)
        return web.Response(
            status=401,
            reason="Unauthorized",
            headers={
                "WWW-Authenticate": f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", '
                'algorithm=MD5, opaque="5ccc069c403ebaf9f0171e9517f40e41"'
            },
        )

    def _digest_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        params = dict(
            (k.strip(), v.strip().strip('"'))
            for k, _, v in (p.partition("=") for p in header[7:].split(","))
        )
        if params.get("nonce") not in self._nonces or params.get("uri") != request.path_qs:
            return False

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        ha1 = md5(f"{self.username}:{REALM}:{self.password}")
        ha2 = md5(f"POST:{params['uri']}")
        want = md5(f"{ha1}:{params['nonce']}:{params.get('nc')}:{params.get('cnonce')}:auth:{ha2}")
        ok = params.get("username") == self.username and params.get("response") == want
        if ok:
            self._nonces.discard(params["nonce"])
        return ok

    async def _poly(self, request: web.Request) -> web.StreamResponse:
        ext = request.match_info["ext"]
        self.requests += 1
        hostile = await self._hostile(request, ext)
        if hostile is not None:
            return hostile
        body = await request.read()
        if not self._digest_ok(request):
            if request.headers.get("Authorization"):
                self.refused.append((ext, "wrong digest"))
            return self._challenge()
        if request.content_type != "application/x-com-polycom-spipx":
            self.refused.append((ext, f"content type {request.content_type}"))
            return web.Response(status=400, reason="Bad Request")
        if len(body) > 1024:
            self.refused.append((ext, f"{len(body)} bytes"))
            return web.Response(status=413, reason="Request Entity Too Large")
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            self.refused.append((ext, f"not XML: {exc}"))
            return web.Response(status=400, reason="Bad Request")
        data = root.findall("Data")
        if root.tag != "PolycomIPPhone" or len(data) != 1 or not data[0].get("priority"):
            self.refused.append((ext, "not a PolycomIPPhone Data push"))
            return web.Response(status=400, reason="Bad Request")
        lines = [p.text or "" for p in data[0].findall("p")]
        self.shown.append(Shown(ext, "poly", data[0].findtext("h1") or "", lines, body))
        return web.Response(status=200, reason="OK")

    # -- Cisco ------------------------------------------------------------------
    @staticmethod
    def _cisco_error(number: int) -> web.Response:
        return web.Response(
            text=f'<?xml version="1.0" encoding="utf-8"?><CiscoIPPhoneError Number="{number}"/>',
            content_type="text/xml",
        )

    async def _cisco(self, request: web.Request) -> web.StreamResponse:
        ext = request.match_info["ext"]
        self.requests += 1
        hostile = await self._hostile(request, ext)
        if hostile is not None:
            return hostile
        want = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != want:
            self.refused.append((ext, "wrong basic auth"))
            return self._cisco_error(4)
        form = urllib.parse.parse_qs((await request.read()).decode("ascii", "replace"))
        try:
            [xml] = form["XML"]
            root = ET.fromstring(xml)
            assert root.tag == "CiscoIPPhoneExecute"
            items = [item.get("URL") or "" for item in root.findall("ExecuteItem")]
            assert items
        except (KeyError, ValueError, AssertionError, ET.ParseError):
            self.refused.append((ext, "no CiscoIPPhoneExecute in XML="))
            return self._cisco_error(1)
        statuses = []
        for url in items:
            statuses.append(await self._fetch(ext, url))
        response = "".join(
            f'<ResponseItem Status="{s}" Data="" URL="{url}"/>'
            for s, url in zip(statuses, items, strict=True)
        )
        return web.Response(
            text=f"<CiscoIPPhoneResponse>{response}</CiscoIPPhoneResponse>",
            content_type="text/xml",
        )

    async def _fetch(self, ext: str, url: str) -> int:
        """GET the ExecuteItem URL as the phone does; 0 if it gave a CiscoIPPhoneText."""
        self.fetched.append(url)
        try:
            async with self._client.get(url) as resp:
                self.fetch_answers.append(resp.status)
                raw = await resp.read()
                if (
                    resp.status != 200
                    or "iso-8859-1" not in resp.headers.get("Content-Type", "").lower()
                ):
                    return 1
        except Exception:
            return 1
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            return 1
        if root.tag != "CiscoIPPhoneText":
            return 1
        lines = (root.findtext("Text") or "").split("\n")
        self.shown.append(Shown(ext, "cisco", root.findtext("Title") or "", lines, raw))
        return 0


def started(**kwargs: Any) -> HttpPhones:
    return HttpPhones(**kwargs).start()
