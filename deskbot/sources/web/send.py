"""The send page: the form, the preview of who gets it, and the live rows of a send.

A form becomes a ``Request`` the way a chat message does: a plain send
carries targets and text apart (the text is never read as a command); a
template or a later send is the chat command itself (``in 15m 486 text``,
``confirm 486 !firedrill time=14:00``), so the relay's grammar and checks, and
its words for every refusal, are the chat's. With "Confirm" ticked the rows
show each phone's confirmation too, live, until ``confirm_within`` has passed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web

from deskbot.relay.confirm import UNSUPPORTED, WAITING, keyed
from deskbot.relay.values import Accepted, Answer, Dispatch, Replay, Request
from deskbot.sources import http
from deskbot.sources.serve import take
from deskbot.sources.web.pages import redirect, render
from deskbot.sources.web.sessions import signed_in
from deskbot.sources.web.watch import DONE, Row, Watched, row_of

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
RETRY_MS = 2000  # how soon a page's event stream connects again after it ended early


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
            can_confirm=self.can_confirm,
            confirm=values.get("confirm", False),
            max_chars=relay.policy.message.max_chars,
            suggestions=self._suggestions(),
            templates=templates,
            nonce=secrets.token_urlsafe(18),
            answer=values.get("answer"),
            fields=fields,
        )

    @property
    def can_confirm(self) -> bool:
        """Confirmations need the store's requests and [desk] url (where keys point)."""
        return self.relay.confirmer is not None and bool(self.relay.policy.desk_url)

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
        confirm = form.get("confirm") == "on"

        def refuse(text: str) -> web.Response:
            answer = Answer(text, error=True)
            return self._page(session, 422, answer=answer, confirm=confirm, **given)

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
            asked = "confirm" if confirm else ""
            message = "" if template else given["message"]
            command = " ".join(filter(None, (later, asked, what.strip(), message)))
            sent = Request(user, command, place="web", key=key)
        else:
            message = given["message"]
            sent = Request(user, message, place="web", key=key, targets=targets, confirm=confirm)
        taken = take(self.relay, sent)
        if isinstance(taken, Replay):
            session.notices.append("That form was sent already: History has its answers.")
            return redirect("/history")
        if isinstance(taken, Answer):
            if not taken.error:
                self.relay.answered(sent)
            status = 422 if taken.error else 200
            keep: dict[str, Any] = {**given, "confirm": confirm} if taken.error else {}
            return self._page(session, status, answer=taken, **keep)
        if taken.job.probe:  # "probe" typed as targets of a template: the Phones page probes
            return refuse("probes are made from the Phones page; nothing was sent")
        return redirect(f"/sends/{self._start(session, taken)}")

    def _start(self, session: Session, accepted: Accepted) -> int:
        job = accepted.job
        rows = {}
        for p in job.phones:
            skipped = accepted.skipped.get(p.extension, "")
            row = row_of(p, None, skipped)
            if job.confirm and not skipped:  # what the relay asks; its report is the last word
                row = replace(row, confirm=WAITING if keyed(p) else UNSUPPORTED)
            rows[p.extension] = row
        watched = Watched(accepted.command_id, session.name, _title(job), rows)
        if job.confirm:
            watched.confirm_until = time.time() + self.relay.policy.message.confirm_within
        self.source.watches.add(watched)
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
        watched.expire(time.time())
        return render("sent.html", signed_in(request), watched=watched)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: a ``row`` per phone now and as each changes, ``done`` when the
        phones have answered (with how many confirmations are awaited), and the rows of the
        confirmations after that until none is. A stream ends before its connection's lifetime;
        the browser connects again and gets every row anew."""
        watched = self._watched(request)
        watched.expire(time.time())
        stream = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await stream.prepare(request)
        await stream.write(f"retry: {RETRY_MS}\n\n".encode())
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.relay.patience + http.LIFETIME / 2
        queue = watched.listen()
        try:
            while loop.time() < ends:  # after that the browser connects again
                now = time.time()
                watched.expire(now)  # confirm_within passed: its rows and DONE are queued
                wait = ends - loop.time()
                if watched.finished is not None and watched.waiting and watched.confirm_until:
                    wait = min(wait, watched.confirm_until - now)  # > 0: not expired yet
                try:
                    item = await asyncio.wait_for(queue.get(), max(wait, 0.001))
                except TimeoutError:
                    continue
                if isinstance(item, Row):
                    await stream.write(_event("row", item.record()))
                    continue
                waiting = watched.waiting
                done = {"summary": watched.summary, "waiting": waiting}
                await stream.write(_event("done", done))
                if item == DONE and not waiting:
                    break
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
