"""The send page: the form, the preview of who gets it, and the live rows of a send.

A form becomes a ``Request`` the way a chat message does: a plain send
carries targets and text apart (the text is never read as a command); a
template or a later send is the chat command itself (``in 15m 486 text``,
``486 !firedrill time=14:00``), so the relay's grammar and checks, and its
words for every refusal, are the chat's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from deskbot.relay.values import Accepted, Answer, Dispatch, Replay, Request
from deskbot.sources.serve import take
from deskbot.sources.web.pages import redirect, render
from deskbot.sources.web.sessions import signed_in
from deskbot.sources.web.watch import Watched, row_of

if TYPE_CHECKING:
    from deskbot.sources.web.app import WebSource
    from deskbot.sources.web.sessions import Session

log = logging.getLogger("deskbot.web")

MAX_TARGETS_CHARS = 1000
MAX_SUGGESTIONS = 2000  # entries in the targets' suggestion list
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")  # one per form: a second submit is not sent again
LATER = re.compile(r"(in|at) [0-9:smhd]{1,8}")  # "in 15m", "at 14:55"; the grammar checks more
TEMPLATE = re.compile(r"[a-z0-9_.-]{1,64}")
SPACE = re.compile(r"\s+")
WHITESPACE = re.compile(r"\s")


def routes(web_source: WebSource, app: web.Application) -> None:
    pages = SendPages(web_source)
    app.router.add_get("/", pages.form)
    app.router.add_post("/send", pages.send)
    app.router.add_get("/sends/{id:[0-9]{1,12}}", pages.watch)
    app.router.add_get("/sends/{id:[0-9]{1,12}}/events", pages.events)
    app.router.add_get("/preview", pages.preview)


class SendPages:
    def __init__(self, source: WebSource):
        self.source = source
        self.relay = source.relay

    def _page(self, session: Session, status: int = 200, **values: Any) -> web.Response:
        relay = self.relay
        templates = [
            {"name": name, "text": t.text, "targets": t.targets or ""}
            for name, t in sorted(relay.policy.templates.items())
        ]
        fields = {"targets": "", "message": "", "later": "", "template": "", "vars": ""}
        fields.update({k: v for k, v in values.items() if k in fields})
        return render(
            "send.html",
            session,
            status,
            max_chars=relay.policy.message.max_chars,
            suggestions=self._suggestions(),
            templates=templates,
            nonce=secrets.token_urlsafe(18),
            answer=values.get("answer"),
            fields=fields,
        )

    def _suggestions(self) -> list[tuple[str, str]]:
        """(value, what it is) for the targets field: groups, people, extensions with labels."""
        d = self.relay.directory
        found: list[tuple[str, str]] = [
            (f"@{g}", f"group, {len(m)} member(s)") for g, m in sorted(d.groups.items())
        ]
        found += [(name, p.display) for name, p in sorted(d.people.items()) if p.phone]
        found += [(ext, p.label) for ext, p in sorted(d.phones.items())]
        return found[:MAX_SUGGESTIONS]

    async def form(self, request: web.Request) -> web.StreamResponse:
        return self._page(signed_in(request))

    async def send(self, request: web.Request) -> web.StreamResponse:
        session = signed_in(request)
        form = await request.post()
        given = {k: str(form.get(k, "")) for k in ("targets", "message", "later", "template")}
        given["vars"] = SPACE.sub(" ", str(form.get("vars", ""))).strip()
        targets, later, template = (given[k].strip() for k in ("targets", "later", "template"))

        def refuse(text: str) -> web.Response:
            return self._page(session, 422, answer=Answer(text, error=True), **given)

        if len(targets) > MAX_TARGETS_CHARS or WHITESPACE.search(targets):
            return refuse(
                "Targets are one word without spaces, like 486,alice,@sales "
                f"(at most {MAX_TARGETS_CHARS} characters). Nothing was sent."
            )
        if later and not LATER.fullmatch(later):
            return refuse(
                "Later: write `in 20s`, `in 15m`, `in 2h` or `at 14:55`. Nothing was sent."
            )
        if template and not TEMPLATE.fullmatch(template):
            return refuse(f"no template {template[:40]!r}: `templates` lists them")
        nonce = str(form.get("nonce", ""))
        key = f"web:{session.name}:{nonce}" if NONCE.fullmatch(nonce) else ""
        user = self.source.user(session)
        if template or later:
            what = f"{targets} !{template} {given['vars']}" if template else targets
            command = " ".join(
                filter(None, (later, what.strip(), "" if template else given["message"]))
            )
            sent = Request(user, command, place="web", key=key)
        else:
            sent = Request(user, given["message"], place="web", key=key, targets=targets)
        taken = take(self.relay, sent)
        if isinstance(taken, Replay):
            session.notices.append("That form was sent already: History has its answers.")
            return redirect("/history")
        if isinstance(taken, Answer):
            if not taken.error:
                self.relay.answered(sent)
            status = 422 if taken.error else 200
            keep = given if taken.error else {}
            return self._page(session, status, answer=taken, **keep)
        if taken.job.probe:  # "probe" typed as targets of a template: the Phones page probes
            return refuse("probes are made from the Phones page; nothing was sent")
        return redirect(f"/sends/{self._start(session, taken)}")

    def _start(self, session: Session, accepted: Accepted) -> int:
        job = accepted.job
        rows = {
            p.extension: row_of(p, None, accepted.skipped.get(p.extension, "")) for p in job.phones
        }
        self.source.watches.add(Watched(accepted.command_id, session.name, _title(job), rows))
        task = asyncio.get_running_loop().create_task(self._deliver(accepted))
        self.source.track(task)
        return accepted.command_id

    async def _deliver(self, accepted: Accepted) -> None:
        try:
            result = await self.relay.fan_out(accepted)  # the relay records every answer
        except Exception:
            log.exception("sending command %d failed", accepted.command_id)
            return
        self.source.watches.finish(accepted.command_id, result)
        self.relay.answered(accepted.job.request)

    def _watched(self, request: web.Request) -> Watched:
        session = signed_in(request)
        watched = self.source.watches.get(int(request.match_info["id"]))
        if watched is None or not (watched.owner == session.name or self.source.is_admin(session)):
            raise web.HTTPNotFound(text="no such send of yours: History lists them")
        return watched

    async def watch(self, request: web.Request) -> web.StreamResponse:
        watched = self._watched(request)
        return render("sent.html", signed_in(request), watched=watched)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a ``row`` per phone now and as each answers, then ``done``."""
        watched = self._watched(request)
        stream = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await stream.prepare(request)
        queue = watched.listen()
        try:
            while (row := await queue.get()) is not None:
                await stream.write(_event("row", row.record()))
            done = {"summary": watched.summary}
            await stream.write(_event("done", done))
        except (ConnectionResetError, asyncio.CancelledError):
            watched.listeners.discard(queue)
            raise
        finally:
            watched.listeners.discard(queue)
        return stream

    async def preview(self, request: web.Request) -> web.StreamResponse:
        """Who a send would reach, in `who`'s words (no phone addresses)."""
        targets = request.query.get("targets", "").strip()[:MAX_TARGETS_CHARS]
        if not targets:
            return web.json_response({"text": "", "error": False})
        answer = self.relay.who(targets, show_uris=False)
        return web.json_response({"text": answer.text, "error": answer.error})


def _title(job: Dispatch) -> str:
    names = ", ".join(p.title for p in job.phones)
    return f"{names}: {job.text}"


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
