"""The HTTP API source: ``POST /v1/send`` and the Alertmanager and Grafana webhooks.

Each client is named in ``[api.clients.NAME]`` and known by its bearer token
(compared in constant time); the client's name is the user id of its
requests, so audit rows, rate limits and the phone's sender prefix carry it.
What a client may reach is policy: the relay checks it (``Policy.scopes``).
This module only translates HTTP to a ``Request`` and a relay answer back to
a status code and JSON.

``/v1/send`` answers once every phone answered, with each phone's code. The
webhooks answer 202 as soon as the notification is recorded in the audit log
and send to the phones afterwards: a monitoring system must not wait for
desk phones, and a 5xx (which Alertmanager retries) must mean "not taken".
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from deskbot.loglimit import RateLimitedLog
from deskbot.relay import report
from deskbot.relay.confirm import state_of
from deskbot.relay.relay import Relay
from deskbot.relay.values import API, Accepted, Answer, ChatUser, Dispatch, Replay, Request
from deskbot.settings.schema import Api
from deskbot.sources import alerts, http
from deskbot.sources.serve import serve, take

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("deskbot.api")

CLIENT = web.RequestKey("client", str)  # the name of the client whose token matched
MAX_BODY = 1024 * 1024  # bytes; an Alertmanager notification of a few hundred alerts fits
BODY_TIMEOUT = 10.0  # seconds to receive a request body
KEEPALIVE = 15.0  # seconds an idle connection stays open
MAX_TARGETS_CHARS = 1000
MAX_KEYS_KEPT = 10_000  # Idempotency-Keys whose body is remembered, newest

# What a refusal from the relay means in HTTP. Webhooks differ in one place: a rate
# limit is "not now" (503: Alertmanager retries), where a script gets 429 and Retry-After.
STATUS = {
    "usage": 400,
    "empty-text": 422,
    "unknown-target": 422,
    "too-long": 422,
    "stale": 422,
    "forbidden": 403,
    "not-allowed": 403,
    "group-too-large": 403,
    "rate-limited": 429,
    "unrecorded": 503,
}


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    token_digest: bytes
    display: str


class BadRequest(Exception):
    """The request cannot be read; ``status``, ``problem`` and the message say why."""

    def __init__(self, status: int, problem: str, message: str):
        super().__init__(message)
        self.status, self.problem = status, problem


def error(status: int, problem: str, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": problem, "message": message}, status=status, headers=headers or None
    )


def refusal(answer: Answer, webhook: bool = False) -> web.Response:
    status = STATUS.get(answer.problem, 400)
    headers = {}
    if answer.problem == "rate-limited":
        headers["Retry-After"] = str(max(1, round(answer.retry_after)))
        status = 503 if webhook else 429
    return error(status, answer.problem or "refused", answer.text, **headers)


IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,200}")


class HttpReplier:
    """Keeps the relay's answer for the HTTP response (nothing is shown while waiting)."""

    waiting_after = None

    def __init__(self) -> None:
        self.answer_given: Answer | None = None
        self.result: report.Report | None = None

    async def answer(self, answer: Answer) -> None:
        self.answer_given = answer

    async def waiting(self, job: Dispatch) -> None:
        pass

    async def report(self, result: report.Report) -> None:
        self.result = result


def deliveries(result: report.Report) -> dict[str, Any]:
    return {
        "deliveries": [report.delivery_record(line) for line in result.lines],
        "delivered": result.delivered,
        "phones": len(result.lines),
    }


class ApiSource:
    name = "api"

    def __init__(self, settings: Api, relay: Relay, secret: Callable[[str], str]):
        self.settings = settings
        self.relay = relay
        self.clients = [
            Client(name, _digest(secret(c.token_env)), c.name or name)
            for name, c in settings.clients.items()
        ]
        self.served: http.Listening | None = None
        self.port = 0
        self.sending: set[asyncio.Task[None]] = set()
        # each request's client ("-": no valid token) and status code (/metrics)
        self.on_request: list[Callable[[str, int], None]] = []
        self._refusals = RateLimitedLog(log)
        # Idempotency-Key -> a digest of the body it was first used with (this process)
        self._bodies: OrderedDict[str, bytes] = OrderedDict()

    # -- lifecycle -------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.served is not None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._counted])
        app.router.add_post("/v1/send", self._send)
        app.router.add_get("/v1/commands/{id}", self._command)
        app.router.add_post("/v1/alertmanager", self._alertmanager)
        app.router.add_post("/v1/grafana", self._grafana)
        app.router.add_put("/v1/grafana", self._grafana)  # Grafana may be set to PUT
        # a /v1/send waits for the phones: its connection may live that long, and no longer
        self.served = await http.serve(
            app,
            self.settings.listen,
            lifetime=self.relay.patience + http.LIFETIME,
            keepalive_timeout=KEEPALIVE,
            shutdown_timeout=2.0,
        )
        self.port = self.served.port
        log.info("HTTP API on http://%s:%d/v1/", self.served.host, self.port)

    async def run(self) -> None:
        await asyncio.Event().wait()  # aiohttp serves by itself; this only marks the source

    async def stop(self) -> None:
        """Stop listening; sends already accepted get up to the sender's timeout to finish."""
        served, self.served = self.served, None
        if served is not None:
            await served.stop(self.sending, self.relay.patience + 1)

    async def notify_admins(self, text: str) -> None:
        pass  # an API has nobody to tell; the log has it

    # -- requests --------------------------------------------------------------
    @web.middleware
    async def _counted(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # aiohttp's own answers: 404, 405, 413, ...
            status = exc.status
            raise
        finally:
            for listener in self.on_request:
                listener(request.get(CLIENT, "-"), status)

    def _client(self, request: web.Request) -> Client | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = _digest(token.strip())
        found = None
        for client in self.clients:  # every client compared: the time says nothing
            if hmac.compare_digest(given, client.token_digest):
                found = client
        if found is not None:
            request[CLIENT] = found.name
            request.app[http.GUARD].trust(request.remote)
        return found

    def _unauthorized(self, request: web.Request) -> web.Response:
        self._refusals.warning(
            "api: %s %s from %s without a valid token",
            request.method,
            request.path[:100],
            request.remote,
        )
        return error(
            401,
            "unauthorized",
            "give a client's token as `Authorization: Bearer TOKEN` ([api.clients.NAME] token_env)",
            **{"WWW-Authenticate": 'Bearer realm="deskbot"'},
        )

    async def _json(self, request: web.Request) -> Any:
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(413, "too-large", f"the body is over {MAX_BODY} bytes") from None
        except TimeoutError:
            raise BadRequest(408, "too-slow", "the body took too long to arrive") from None
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(400, "bad-json", f"the body is not JSON: {exc}"[:300]) from None

    async def _send(self, request: web.Request) -> web.Response:
        client = self._client(request)
        if client is None:
            return self._unauthorized(request)
        try:
            body = await self._json(request)
            targets, text = _send_fields(body)
            confirm, escalate_to = _confirm_fields(body)
        except BadRequest as exc:
            return error(exc.status, exc.problem, str(exc))
        user = ChatUser(API, client.name, client.display)
        idempotency = request.headers.get("Idempotency-Key", "")
        if idempotency and not IDEMPOTENCY_KEY.fullmatch(idempotency):
            return error(
                400, "bad-idempotency-key", "Idempotency-Key: 1-200 of A-Z a-z 0-9 . _ : -"
            )
        key = f"api-send:{client.name}:{idempotency}" if idempotency else ""
        body = hashlib.sha256(json.dumps([targets, text, confirm, escalate_to]).encode()).digest()
        if key and self._bodies.setdefault(key, body) != body:
            return error(
                422,
                "idempotency-key-reused",
                "this Idempotency-Key was used with another body: use a new key for a new send",
            )
        if key:
            self._bodies.move_to_end(key)
            while len(self._bodies) > MAX_KEYS_KEPT:
                self._bodies.popitem(last=False)
        replier = HttpReplier()
        sent = Request(
            user,
            text,
            "api",
            key,
            targets=targets,
            answer_repeats=True,
            confirm=confirm,
            escalate_to=escalate_to,
        )
        await serve(self.relay, sent, replier)
        if replier.result is not None:
            return web.json_response(
                {"id": replier.result.command_id, **deliveries(replier.result)}
            )
        if replier.answer_given is None:  # the relay is still sending the first of this key
            return error(409, "in-progress", "a send with this Idempotency-Key is still going on")
        if key:
            self._bodies.pop(key, None)  # a refusal is not kept: the key may be used afresh
        return refusal(replier.answer_given)

    async def _command(self, request: web.Request) -> web.Response:
        """GET /v1/commands/ID: the client's own command, each phone's answer and confirm."""
        client = self._client(request)
        if client is None:
            return self._unauthorized(request)
        raw = request.match_info["id"]
        audit = self.relay.audit
        found = audit.commanded(int(raw)) if audit and raw.isdigit() and len(raw) < 19 else None
        if found is None or (found.chat, found.sender_id) != (API, client.name):
            return error(404, "unknown-command", "no command of this client has that id")
        confirmer = self.relay.confirmer
        asked = {c.extension: c for c in confirmer.store.of(found.id)} if confirmer else {}
        answers = {a.extension: a for a in found.answers}
        now = time.time()
        rows = []
        for planned in found.plan:
            answer = answers.get(planned.extension)
            confirmation = asked.get(planned.extension)
            rows.append(
                {
                    "target": planned.extension,
                    "code": answer.code if answer else 0,
                    "reason": answer.reason if answer else planned.skipped,
                    "confirm": state_of(confirmation, now),
                    "confirmed_at": confirmation.confirmed_at if confirmation else None,
                }
            )
        return web.json_response({"id": found.id, "deliveries": rows})

    async def _alertmanager(self, request: web.Request) -> web.Response:
        return await self._webhook(request, "alertmanager")

    async def _grafana(self, request: web.Request) -> web.Response:
        return await self._webhook(request, "grafana")

    async def _webhook(self, request: web.Request, kind: str) -> web.Response:
        client = self._client(request)
        if client is None:
            return self._unauthorized(request)
        targets = request.query.get("targets", "")
        if not targets or len(targets) > MAX_TARGETS_CHARS:
            return error(
                400,
                "missing-targets",
                f"say where the alerts go: /v1/{kind}?targets=486,@ops "
                f"(1 to {MAX_TARGETS_CHARS} characters)",
            )
        confirm = request.query.get("confirm", "0")
        if confirm not in ("0", "1"):
            return error(400, "wrong-type", "confirm is 1 (each phone is asked to confirm) or 0")
        user = ChatUser(API, client.name, client.display)
        refused = self.relay.screen(Request(user, "", place=kind, targets=targets))
        if refused is not None:  # scope and rate first: a refused client costs no parsing
            return refusal(refused, webhook=True)
        try:
            payload = alerts.bounded(await self._json(request))
            notification = alerts.Notification.model_validate(payload)
        except BadRequest as exc:
            return error(exc.status, exc.problem, str(exc))
        except alerts.ValidationError as exc:
            article = "an" if kind[0] in "aeiou" else "a"  # "an alertmanager", "a grafana"
            why = f"not {article} {kind} notification: {alerts.problem(exc)}"
            return error(400, "bad-payload", why)
        text = alerts.text(
            notification, self.relay.policy.message.max_chars, self.settings.alert_template
        )
        taken = take(
            self.relay,
            Request(
                user,
                text,
                place=kind,
                key=alerts.key(kind, client.name, targets, notification),
                targets=targets,
                key_window=self.settings.dedup_window,
                confirm=confirm == "1",
                labels=alerts.labels(notification) if confirm == "1" else (),
            ),
        )
        if isinstance(taken, Replay):
            log.info("%s notification from %s came in again: not sent again", kind, client.name)
            return web.json_response({"status": "duplicate"})
        if isinstance(taken, Answer):
            return refusal(taken, webhook=True)
        self._fan_out(taken)
        phones = [p.extension for p in taken.job.phones]
        return web.json_response(
            {"status": "accepted", "command": taken.command_id, "phones": phones}, status=202
        )

    def _fan_out(self, accepted: Accepted) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(accepted))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _deliver(self, accepted: Accepted) -> None:
        try:
            await self.relay.fan_out(accepted)  # the relay logs and records every answer
        except Exception:
            log.exception("sending command %d failed", accepted.command_id)
        finally:  # the webhook was answered when it was taken: no replica answers it later
            self.relay.let_go(accepted)


def _send_fields(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise BadRequest(400, "bad-json", 'the body must be a JSON object {"targets", "text"}')
    for name in ("targets", "text"):
        if name not in body:
            raise BadRequest(400, "missing-field", f"the field {name!r} is missing")
        if not isinstance(body[name], str):
            raise BadRequest(400, "wrong-type", f"the field {name!r} must be a string")
    if len(body["targets"]) > MAX_TARGETS_CHARS:
        raise BadRequest(422, "unknown-target", f"targets are at most {MAX_TARGETS_CHARS} chars")
    return body["targets"], body["text"]


def _digest(token: str) -> bytes:
    """Tokens are compared as digests: equal lengths, so compare_digest takes the same time."""
    return hashlib.sha256(token.encode()).digest()


def _confirm_fields(body: dict[str, Any]) -> tuple[bool, str]:
    """``"confirm": true`` and ``"escalate_to": "TARGETS"`` (which needs ``confirm``)."""
    confirm, escalate_to = body.get("confirm", False), body.get("escalate_to", "")
    if not isinstance(confirm, bool):
        raise BadRequest(400, "wrong-type", "the field 'confirm' must be true or false")
    if not isinstance(escalate_to, str):
        raise BadRequest(400, "wrong-type", "the field 'escalate_to' must be a string")
    if len(escalate_to) > MAX_TARGETS_CHARS:
        why = f"escalate_to is at most {MAX_TARGETS_CHARS} chars"
        raise BadRequest(422, "unknown-target", why)
    if escalate_to and not confirm:
        why = "'escalate_to' tells who did not confirm: it needs \"confirm\": true"
        raise BadRequest(400, "usage", why)
    return confirm, escalate_to
