"""The web console's source: its HTTP server, sign-in, sign-out and the checks on every request.

A person signs in with a name under ``[web.users]`` (a person under
``[people]``) and their password, or, with ``[web] ldap = true``, any person
of the directory with their directory password (a bind as them through
``[directory.ldap]``); from then on they act as that person, with the same
rights as in chat (``ChatUser("web", name)``). Every request
passes ``_guard``: the security headers, the session, and for a POST the
CSRF checks (the browser's ``Sec-Fetch-Site`` and ``Origin``, and the
session's token in the form). Sending and the other pages are in ``send``
and ``look``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from deskbot.directory import ldap
from deskbot.directory.snapshot import Person
from deskbot.relay.relay import Relay
from deskbot.relay.values import ChatUser
from deskbot.settings.schema import Ldap, Web
from deskbot.sources import http
from deskbot.sources.web import look, passwords, send
from deskbot.sources.web.pages import HEADERS, redirect, render
from deskbot.sources.web.sessions import (
    COOKIE,
    LDAP,
    PASSWORD,
    SESSION,
    Session,
    Sessions,
    SignInGuard,
    signed_in,
)
from deskbot.sources.web.watch import Watches
from deskbot.store.base import SignIns

log = logging.getLogger("deskbot.web")

CHAT = "web"  # the source name in the audit log and in ChatUser
MAX_BODY = 64 * 1024  # bytes of a form: a message is at most 1000 characters
KEEPALIVE = 5.0  # seconds an idle connection stays open: an open page holds none after that
# Browsers open several connections each, and behind a TLS proxy everyone comes from one
# address: more per peer than the API allows, within the same total.
PER_PEER = http.MAX_CONNECTIONS // 2
OPEN = ("/signin", "/static/")  # what needs no session
NAME_CHARS = 64
CSRF_REFUSED = (
    "Refused: this request did not come from deskbot's own page (CSRF check), "
    "so nothing was done. Open the page again and send from there."
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebSource:
    name = CHAT

    def __init__(
        self,
        settings: Web,
        relay: Relay,
        sign_ins: SignIns | None = None,
        directory: tuple[Ldap, Callable[[], str]] | None = None,
    ):
        """``directory``: with ``[web] ldap``, [directory.ldap] and deskbot's own password."""
        self.settings = settings
        self.relay = relay
        self.sign_ins = sign_ins
        self.directory = directory if settings.ldap else None
        self.sessions = Sessions(settings.idle, settings.lifetime)
        self.guard = SignInGuard(relay.audit if relay.audit and relay.audit.shared else None)
        self.watches = Watches()
        self.checking = asyncio.Semaphore(2)  # bcrypt checks at once: each is 0.2 s of a core
        self.served: http.Listening | None = None
        self.port = 0
        self.sending: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.served is not None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._guard])
        app.on_response_prepare.append(_headers)
        app.router.add_get("/signin", self._signin_page)
        app.router.add_post("/signin", self._signin)
        app.router.add_post("/signout", self._signout)
        send.routes(self, app)
        look.routes(self, app)
        static = Path(str(resources.files("deskbot.sources.web") / "static"))
        app.router.add_static("/static/", static, show_index=False, follow_symlinks=False)
        return app

    async def start(self) -> None:
        self.relay.on_delivery.append(self.watches.delivered)
        if self.relay.confirmer is not None:  # a press shows in the send's rows at once
            self.relay.confirmer.on_confirm.append(self.watches.confirmed)
        # an event stream lives as long as a send: no connection lives longer
        self.served = await http.serve(
            self.app(),
            self.settings.listen,
            lifetime=self.relay.patience + http.LIFETIME,
            guard={"per_peer": PER_PEER},
            keepalive_timeout=KEEPALIVE,
            shutdown_timeout=2.0,
        )
        self.port = self.served.port
        log.info("web console on http://%s:%d/", self.served.host, self.port)

    async def run(self) -> None:
        await asyncio.Event().wait()  # aiohttp serves by itself; this only marks the source

    async def stop(self) -> None:
        served, self.served = self.served, None
        if served is not None:
            await served.stop(self.sending, self.relay.patience + 1)
        if self.watches.delivered in self.relay.on_delivery:
            self.relay.on_delivery.remove(self.watches.delivered)
        confirmer = self.relay.confirmer
        if confirmer is not None and self.watches.confirmed in confirmer.on_confirm:
            confirmer.on_confirm.remove(self.watches.confirmed)

    async def notify_admins(self, text: str) -> None:
        pass  # nobody reads the console at that moment; the log has it

    # -- who is asking -----------------------------------------------------------
    def person(self, session: Session) -> Person | None:
        """The session's person, while they may still sign in and are in the directory."""
        if session.via == PASSWORD and session.name not in self.settings.users:
            return None
        if session.via == LDAP and self.directory is None:
            return None
        return self.relay.directory.people.get(session.name)

    def user(self, session: Session) -> ChatUser:
        person = self.person(session)
        return ChatUser(CHAT, session.name, person.display if person else session.name)

    def is_admin(self, session: Session) -> bool:
        return self.relay.is_admin(self.user(session), self.person(session))

    def track(self, task: asyncio.Task[None]) -> None:
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        session = self.sessions.find(request.cookies.get(COOKIE))
        if session is not None and self.person(session) is None:  # removed since sign-in
            self.sessions.end(session)
            session = None
        request[SESSION] = session
        if request.method == "POST":
            if not _same_origin(request):
                log.warning("web: cross-site %s %s refused", request.method, request.path)
                return render("refused.html", session, 403, message=CSRF_REFUSED)
            if request.path != "/signin":
                if session is None:  # signed out or expired meanwhile: sign in again
                    raise web.HTTPSeeOther("/signin")
                form = await request.post()
                token = str(form.get("csrf", ""))
                if not hmac.compare_digest(token, session.csrf):
                    log.warning("web: %s without a valid CSRF token refused", request.path)
                    return render("refused.html", session, 403, message=CSRF_REFUSED)
        elif session is None and not request.path.startswith(OPEN):
            raise web.HTTPSeeOther("/signin")
        return await handler(request)

    # -- signing in and out ------------------------------------------------------
    async def _signin_page(self, request: web.Request) -> web.StreamResponse:
        if request[SESSION] is not None:
            raise web.HTTPSeeOther("/")
        return render("signin.html", None, problem="", name="")

    async def _signin(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        name = str(form.get("name", "")).strip().lower()[:NAME_CHARS]
        password = str(form.get("password", ""))
        address = request.remote or ""
        wait = self.guard.wait(name, address)
        if wait:
            self._record(name, address, "rate-limited")
            problem = f"Too many failed sign-ins: try again in {max(1, round(wait))} s."
            return render("signin.html", None, 429, problem=problem, name=name)
        known = name in self.relay.directory.people
        hashed = self.settings.users.get(name) if known else None
        via = LDAP if hashed is None and self.directory is not None else PASSWORD
        async with self.checking:  # in a thread: the chats and the phones' answers go on
            try:
                if via == LDAP:  # every name not in [web.users], known or not: no hint
                    ok = await asyncio.to_thread(self._directory_password, name, password)
                    ok = ok and known
                else:
                    ok = await asyncio.to_thread(passwords.verify, password, hashed)
            except ldap.LdapError as exc:
                self._record(name, address, "directory-unavailable")
                log.error("web: sign-in through the directory failed: %s", exc)
                problem = (
                    "Signing in with the directory password is not possible right now "
                    "(deskbot cannot reach the directory). Try again later, or tell an admin."
                )
                return render("signin.html", None, 503, problem=problem, name=name)
        if not ok:
            self.guard.failed(name, address)
            self._record(name, address, "wrong-password")
            log.warning("web: failed sign-in from %s", address)
            problem = "Wrong name or password."  # the same words for a name that is not there
            return render("signin.html", None, 401, problem=problem, name=name)
        _, cookie = self.sessions.start(name, via)
        self._record(name, address, "signed-in")
        log.info("web: %s signed in from %s (%s)", name, address, via)
        response = redirect("/")
        response.set_cookie(
            COOKIE,
            cookie,
            httponly=True,
            samesite="Strict",
            secure=self.settings.secure_cookie,
            path="/",
            max_age=self.settings.lifetime,
        )
        return response

    async def _signout(self, request: web.Request) -> web.StreamResponse:
        session = signed_in(request)
        self.sessions.end(session)
        self._record(session.name, request.remote or "", "signed-out")
        response = redirect("/signin")
        response.del_cookie(COOKIE, path="/")
        return response

    def _directory_password(self, name: str, password: str) -> bool:
        assert self.directory is not None
        settings, service_password = self.directory
        return ldap.check_password(settings, service_password(), name, password)

    def _record(self, name: str, address: str, outcome: str) -> None:
        if self.sign_ins is not None:
            self.sign_ins.record(name, address, outcome)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, pages, assets and errors alike, carries the security headers."""
    response.headers.update(HEADERS)


_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,300}")


def _same_origin(request: web.Request) -> bool:
    """A POST from deskbot's own page: the browser says so (Fetch metadata, Origin)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:  # an old browser or a script: the CSRF token still has to match
        return True
    host = request.host
    return bool(_HOST.fullmatch(host)) and urlsplit(origin).netloc == host
