"""A local stand-in for Slack that speaks Slack's wire formats.

One aiohttp server, on its own thread and event loop, plays all of Slack for
a deskbot under test:

- the Web API: ``GET/POST /api/<method>`` with form or JSON bodies and a
  bearer token, answering like Slack (``{"ok": false, "error": ...}`` with
  status 200, or 429 with ``Retry-After``);
- ``response_url`` targets (``/respond/<n>``), 5 uses each, like Slack;
- the Socket Mode WebSocket: ``hello`` on connect, envelopes pushed on
  request, acks recorded with their delay, ``disconnect`` on request, pings
  answered;
- ``sign()`` and ``post_command()`` for HTTP mode: a form-encoded slash
  command signed ``v0`` over the exact raw body.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

BOT_TOKEN = "xoxb-standin-bot-token"
APP_TOKEN = "xapp-standin-app-token"
SIGNING_SECRET = "standin-signing-secret"
TEAM_ID = "T0STANDIN"
BOT_USER_ID = "U0DESKBOT"
BOT_ID = "B0DESKBOT"
APP_ID = "A0DESKBOT"


@dataclass
class Ack:
    envelope_id: str
    payload: dict[str, Any]
    seconds: float  # from the push to the ack
    at: float = field(default_factory=time.monotonic)  # when the stand-in got it


@dataclass
class Posted:
    """A message some client posted: chat.postMessage, postEphemeral or a response_url."""

    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)  # when the stand-in took it

    @property
    def text(self) -> str:
        return str(self.args.get("text", ""))

    @property
    def channel(self) -> str:
        return str(self.args.get("channel", ""))

    @property
    def thread_ts(self) -> str:
        return str(self.args.get("thread_ts") or "")

    @property
    def blocks(self) -> list[dict[str, Any]]:
        blocks = self.args.get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else blocks


@dataclass
class Workspace:
    """What the stand-in knows and what it was told to do wrong."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_in_channel: set[str] = field(default_factory=set)
    rate_limit_once: set[str] = field(default_factory=set)  # method names
    socket_refused: bool = False  # apps.connections.open fails: Socket Mode cannot connect


class SlackStandIn:
    def __init__(self) -> None:
        self.workspace = Workspace()
        self.calls: list[tuple[str, dict[str, Any]]] = []  # (method, args), every Web API call
        self.posts: list[Posted] = []  # chat.postMessage that succeeded
        self.ephemerals: list[Posted] = []
        self.responses: dict[str, list[dict[str, Any]]] = {}  # response_url id -> posts
        self.acks: dict[str, Ack] = {}
        self.rate_limited: list[str] = []  # methods answered with 429
        self.connections = 0  # Socket Mode connections opened so far
        self._pushed_at: dict[str, float] = {}
        self._sockets: list[web.WebSocketResponse] = []
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._start())

    # -- addresses ---------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    def new_response_url(self) -> str:
        n = str(next(self._ids))
        self.responses[n] = []
        return f"{self.base}/respond/{n}"

    # -- running -------------------------------------------------------------------
    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/respond/{id}", self._respond)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def close(self) -> None:
        async def stop() -> None:
            for ws in list(self._sockets):
                await ws.close()
            if self._runner is not None:
                await self._runner.cleanup()

        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # -- the Web API ------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        token = token or str(args.pop("token", ""))
        self.calls.append((method, args))
        if method in self.workspace.rate_limit_once:
            self.workspace.rate_limit_once.discard(method)
            self.rate_limited.append(method)
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "1"}
            )
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != expected:
            return self._error("invalid_auth" if token else "not_authed")
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return self._error("unknown_method")
        return await handler(args)

    @staticmethod
    def _error(error: str) -> web.Response:
        return web.json_response({"ok": False, "error": error})

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    async def _api_auth_test(self, args: dict[str, Any]) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "url": "https://standin.slack.com/",
                "team": "Stand-in",
                "user": "deskbot",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            }
        )

    async def _api_apps_connections_open(self, args: dict[str, Any]) -> web.Response:
        if self.workspace.socket_refused:
            return self._error("internal_error")
        return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"})

    async def _api_chat_postMessage(self, args: dict[str, Any]) -> web.Response:
        channel = str(args.get("channel", ""))
        if channel in self.workspace.not_in_channel:
            return self._error("not_in_channel")
        if not args.get("text") and not args.get("blocks"):
            return self._error("no_text")
        ts = self._next_ts()
        self.posts.append(Posted("chat.postMessage", {**args, "ts": ts}))
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "message": args})

    async def _api_chat_postEphemeral(self, args: dict[str, Any]) -> web.Response:
        if not args.get("user"):
            return self._error("user_not_in_channel")
        self.ephemerals.append(Posted("chat.postEphemeral", args))
        return web.json_response({"ok": True, "message_ts": self._next_ts()})

    async def _api_chat_update(self, args: dict[str, Any]) -> web.Response:
        return web.json_response({"ok": True, "channel": args.get("channel"), "ts": args.get("ts")})

    async def _api_users_info(self, args: dict[str, Any]) -> web.Response:
        user = self.workspace.users.get(str(args.get("user", "")))
        if user is None:
            return self._error("user_not_found")
        return web.json_response({"ok": True, "user": user})

    async def _api_conversations_open(self, args: dict[str, Any]) -> web.Response:
        users = str(args.get("users", ""))
        return web.json_response({"ok": True, "channel": {"id": "D" + users.lstrip("UW")}})

    # -- response_url ----------------------------------------------------------------
    async def _respond(self, request: web.Request) -> web.Response:
        posts = self.responses.get(request.match_info["id"])
        if posts is None:
            return web.Response(status=404, text="no_such_url")
        if len(posts) >= 5:
            return web.Response(status=404, text="used_url")
        posts.append(json.loads(await request.text()))
        return web.Response(text="ok")

    # -- Socket Mode -----------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self._sockets.append(ws)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "standin", "approximate_connection_time": 3600},
                "connection_info": {"app_id": APP_ID},
            }
        )
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                envelope_id = data.get("envelope_id")
                if envelope_id in self._pushed_at:
                    seconds = time.monotonic() - self._pushed_at[envelope_id]
                    self.acks[envelope_id] = Ack(envelope_id, data.get("payload") or {}, seconds)
        finally:
            self._sockets.remove(ws)
        return ws

    @property
    def socket_open(self) -> bool:
        return any(not ws.closed for ws in self._sockets)

    def push(
        self,
        kind: str,
        payload: dict[str, Any],
        accepts_response: bool = True,
        retry_attempt: int = 0,
        every: bool = False,
    ) -> str:
        """Send one envelope on the newest socket (``every``: on each open socket at once, as
        to two replicas' connections); returns its envelope_id."""
        envelope_id = f"env-{next(self._ids)}"
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": accepts_response,
            "payload": payload,
        }
        if kind == "events_api":
            reason = "timeout" if retry_attempt else ""
            envelope.update(retry_attempt=retry_attempt, retry_reason=reason)

        async def send() -> None:
            open_ = [ws for ws in reversed(self._sockets) if not ws.closed]
            self._pushed_at[envelope_id] = time.monotonic()
            await asyncio.gather(
                *(ws.send_str(json.dumps(envelope)) for ws in open_[: None if every else 1])
            )

        self._call(send())
        return envelope_id

    def push_command(self, text: str, user: str, channel: str, **extra: str) -> str:
        return self.push("slash_commands", self.command_fields(text, user, channel, **extra))

    def push_event(
        self, event: dict[str, Any], event_id: str = "", retry_attempt: int = 0, every: bool = False
    ) -> str:
        """An Events API envelope; the same ``event_id`` again is Slack's redelivery."""
        payload = {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": {"event_ts": event.get("ts", ""), **event},
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._ids):08d}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
        }
        return self.push(
            "events_api", payload, accepts_response=False, retry_attempt=retry_attempt, every=every
        )

    def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's warning before it closes a socket; the client must open a new one."""

        async def send() -> None:
            for ws in list(self._sockets):
                if not ws.closed:
                    await ws.send_json({"type": "disconnect", "reason": reason})

        self._call(send())

    def drop_sockets(self) -> None:
        """Close every socket from this side, as a network drop or a server restart would."""

        async def drop() -> None:
            for ws in list(self._sockets):
                await ws.close()

        self._call(drop())

    # -- slash commands ----------------------------------------------------------------
    def command_fields(
        self, text: str, user: str, channel: str, command: str = "/deskphone", **extra: str
    ) -> dict[str, str]:
        """The fields of a real slash-command payload."""
        return {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "team_domain": "standin",
            "channel_id": channel,
            "channel_name": "general",
            "user_id": user,
            "user_name": extra.pop("user_name", user.lower()),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self.new_response_url(),
            "trigger_id": f"{next(self._ids)}.{TEAM_ID}.standin",
            **extra,
        }


def sign(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    return SignatureVerifier(secret).generate_signature(timestamp=str(timestamp), body=body)


@dataclass
class HttpAnswer:
    status: int
    body: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


def post_command(
    url: str,
    fields: dict[str, str],
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    tamper: Callable[[bytes], bytes] = lambda b: b,
) -> HttpAnswer:
    """POST a slash command as Slack does: form-encoded, signed over the exact raw body."""
    body = urllib.parse.urlencode(fields).encode()
    stamp = int(time.time()) if timestamp is None else timestamp
    request = urllib.request.Request(
        url,
        data=tamper(body),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(stamp),
            "X-Slack-Signature": sign(body, stamp, secret),
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        },
        method="POST",
    )
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return HttpAnswer(response.status, response.read().decode(), time.monotonic() - start)
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, exc.read().decode(), time.monotonic() - start)
