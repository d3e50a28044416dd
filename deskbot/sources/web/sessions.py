"""Signed-in sessions, the request key that carries one, and the guard on sign-in failures.

A session lives on the server (so sign-out and expiry end it for sure); the
browser holds only its id, signed with a key made at start (a restart signs
everyone out). A session ends after ``idle`` seconds without a request and
``lifetime`` seconds after sign-in, whichever comes first. Each session has
its own CSRF token, which every form that changes something carries.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from deskbot.relay.window import SharedWindow, SlidingWindow, Window
from deskbot.store.base import CommandLog

COOKIE = "deskbot_session"
MAX_SESSIONS = 10_000  # the oldest session ends when more sign in
FAILURES_PER_NAME = 5  # failed sign-ins per minute for one name, from anywhere
FAILURES_PER_ADDRESS = 20  # failed sign-ins per minute from one address, for any names
PASSWORD, LDAP = "password", "ldap"


@dataclass(slots=True)
class Session:
    id: str
    name: str  # the person under [people]
    csrf: str
    created: float
    seen: float
    via: str = PASSWORD  # how they signed in: PASSWORD ([web.users]) or LDAP (the directory's)
    notices: list[str] = field(default_factory=list)  # shown once on the next page


# the request's session (None: not signed in), set by the web source's guard
SESSION: web.RequestKey[Session | None] = web.RequestKey("session")


def signed_in(request: web.Request) -> Session:
    """The session of a request the guard let through to a page that needs one."""
    session = request[SESSION]
    if session is None:
        raise web.HTTPSeeOther("/signin")
    return session


class Sessions:
    def __init__(
        self, idle: float, lifetime: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.idle, self.lifetime, self.clock = idle, lifetime, clock
        self.key = secrets.token_bytes(32)
        self.by_id: OrderedDict[str, Session] = OrderedDict()

    def start(self, name: str, via: str = PASSWORD) -> tuple[Session, str]:
        """A new session for ``name`` and the cookie value that names it."""
        now = self.clock()
        token, csrf = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        session = Session(token, name, csrf, now, now, via)
        self.by_id[session.id] = session
        while len(self.by_id) > MAX_SESSIONS:
            self.by_id.popitem(last=False)
        return session, f"{session.id}.{self._sign(session.id)}"

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (its idle time starts again), else None."""
        if not cookie or len(cookie) > 200:
            return None
        sid, _, mac = cookie.partition(".")
        if not hmac.compare_digest(mac.encode(), self._sign(sid).encode()):
            return None
        session = self.by_id.get(sid)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle or now - session.created > self.lifetime:
            del self.by_id[sid]
            return None
        session.seen = now
        return session

    def end(self, session: Session) -> None:
        self.by_id.pop(session.id, None)

    def _sign(self, sid: str) -> str:
        return hmac.new(self.key, sid.encode(), hashlib.sha256).hexdigest()


class SignInGuard:
    """Counts failed sign-ins per name and per address; too many and none are checked.

    With a ``shared`` store (replicas on PostgreSQL) the failures are counted
    there, so a guesser behind a load balancer gets no more tries per replica.
    """

    def __init__(
        self, shared: CommandLog | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.by_name: Window
        self.by_address: Window
        if shared is not None:
            self.by_name = SharedWindow(shared, "sign-in-name", FAILURES_PER_NAME)
            self.by_address = SharedWindow(shared, "sign-in-address", FAILURES_PER_ADDRESS)
        else:
            self.by_name = SlidingWindow(FAILURES_PER_NAME, clock=clock)
            self.by_address = SlidingWindow(FAILURES_PER_ADDRESS, clock=clock)

    def wait(self, name: str, address: str) -> float:
        """Seconds until a sign-in as ``name`` from ``address`` is checked again; 0: now."""
        return max(self.by_name.retry_after(name), self.by_address.retry_after(address))

    def failed(self, name: str, address: str) -> None:
        for window, key in ((self.by_name, name), (self.by_address, address)):
            window.take([key])  # it fits: ``wait`` said so just before
            if isinstance(window, SlidingWindow) and len(window.events) > MAX_SESSIONS:
                for quiet in [k for k in window.events if not window.retry_after(k)]:
                    del window.events[quiet]  # hostile names: forget those at rest
