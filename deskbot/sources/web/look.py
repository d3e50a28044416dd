"""History, Scheduled (with cancel) and Phones (with an admin's probe): what a person looks up.

Who sees what is the chat's rule: one's own sends and plans, admins everyone's.
Cancel and probe are the chat commands (``cancel ID``, ``probe TARGETS``) through
the relay, so the rights and the words are the chat's.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from deskbot.relay import report
from deskbot.relay.confirm import state_of
from deskbot.relay.values import Answer, Request
from deskbot.sources.serve import serve
from deskbot.sources.web.pages import redirect, render
from deskbot.sources.web.sessions import signed_in
from deskbot.sources.web.watch import Row, row_of

if TYPE_CHECKING:
    from deskbot.sources.web.app import WebSource
    from deskbot.sources.web.sessions import Session

HISTORY_ROWS = 200
MAX_PHONES_SHOWN = 5000
TARGETS = re.compile(r"\S{1,1000}")


def routes(source: WebSource, app: web.Application) -> None:
    pages = LookPages(source)
    app.router.add_get("/history", pages.history)
    app.router.add_get("/scheduled", pages.scheduled)
    app.router.add_post("/scheduled/{id:[0-9]{1,12}}/cancel", pages.cancel)
    app.router.add_get("/phones", pages.phones)
    app.router.add_post("/phones/probe", pages.probe)


class Kept:
    """A replier that keeps the relay's answer for the page."""

    waiting_after = None

    def __init__(self) -> None:
        self.given: Answer | None = None
        self.result: report.Report | None = None

    async def answer(self, answer: Answer) -> None:
        self.given = answer

    async def waiting(self, job: Any) -> None:
        pass

    async def report(self, result: report.Report) -> None:
        self.result = result


class LookPages:
    def __init__(self, source: WebSource):
        self.source = source
        self.relay = source.relay

    async def history(self, request: web.Request) -> web.StreamResponse:
        session = signed_in(request)
        admin = self.source.is_admin(session)
        entries = []
        if self.relay.audit is not None:
            entries = self.relay.audit.history(
                chat=None if admin else "web",
                sender_id=None if admin else session.name,
                person=None if admin else session.name,
                limit=HISTORY_ROWS,
            )
        confirms = {e.command_id: self._confirms(e.command_id) for e in entries}
        return render("history.html", session, entries=entries, everyone=admin, confirms=confirms)

    def _confirms(self, command_id: int) -> list[Row]:
        """Each phone's confirm state of a command (none: it asked for no confirmation)."""
        confirmer = self.relay.confirmer
        if confirmer is None or not command_id:
            return []
        now = time.time()
        return [
            Row(
                c.extension,
                "",
                "",
                "",
                confirm=state_of(c, now) or "",
                format=c.format,
                confirmed_at=c.confirmed_at,
            )
            for c in confirmer.store.of(command_id)
        ]

    async def scheduled(self, request: web.Request) -> web.StreamResponse:
        session = signed_in(request)
        admin = self.source.is_admin(session)
        deferred = self.relay.deferred
        pending = []
        if deferred is not None:
            pending = (
                deferred.pending(None, None, None)
                if admin
                else deferred.pending("web", session.name, session.name)
            )
        schedules = sorted(self.relay.policy.schedules.items()) if admin else []
        return render(
            "scheduled.html", session, pending=pending, schedules=schedules, everyone=admin
        )

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        session = signed_in(request)
        command = f"cancel {int(request.match_info['id'])}"
        kept = Kept()
        await serve(self.relay, Request(self.source.user(session), command, place="web"), kept)
        if kept.given is not None:
            session.notices.append(report.answer_text(kept.given.text, kept.given.error))
        return redirect("/scheduled")

    def _phones(self, session: Session, status: int = 200, **context: Any) -> web.Response:
        probed_at, last = None, {}
        if self.relay.last_probe is not None:
            probed_at, result = self.relay.last_probe
            last = {ln.phone.extension: row_of(ln.phone, ln.delivery) for ln in result.lines}
        phones = sorted(self.relay.directory.phones.values(), key=lambda p: p.extension)
        context.setdefault("answers", None)
        context.setdefault("answer", None)
        return render(
            "phones.html",
            session,
            status,
            phones=phones[:MAX_PHONES_SHOWN],
            more=max(0, len(phones) - MAX_PHONES_SHOWN),
            last=last,
            probed_at=probed_at,
            admin=self.source.is_admin(session),
            **context,
        )

    async def phones(self, request: web.Request) -> web.StreamResponse:
        return self._phones(signed_in(request))

    async def probe(self, request: web.Request) -> web.StreamResponse:
        session = signed_in(request)
        targets = str((await request.post()).get("targets", "")).strip()
        if not TARGETS.fullmatch(targets):
            refused = Answer("give the targets as one word, like 486,@sales", error=True)
            return self._phones(session, 422, answer=refused)
        kept = Kept()
        user = self.source.user(session)
        await serve(self.relay, Request(user, f"probe {targets}", place="web"), kept)
        if kept.result is None:
            return self._phones(session, 422, answer=kept.given)
        rows = [row_of(ln.phone, ln.delivery, ln.skipped) for ln in kept.result.lines]
        return self._phones(session, answers=rows, summary=report.summary_text(kept.result))
