"""Server-rendered pages: Jinja2 with autoescape on (typed HTML shows as text), and the
headers every answer carries (a Content-Security-Policy without inline script).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import jinja2

    from deskbot.sources.web.sessions import Session

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make a form's Origin "null"
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@functools.cache
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deskbot.sources.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["iso"] = iso
    env.filters["utc"] = utc
    return env


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 for <time datetime>; the browser shows it in its own zone."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def utc(ts: float) -> str:
    """What <time> shows before the script puts it in the browser's zone."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(
    template: str, session: Session | None, status: int = 200, **context: Any
) -> web.Response:
    notices = list(session.notices) if session else []
    if session:
        session.notices.clear()
    body = environment().get_template(template).render(session=session, notices=notices, **context)
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


def redirect(location: str) -> web.Response:
    """303 See Other: after a form, the browser asks for ``location`` with a GET."""
    return web.Response(status=303, headers={"Location": location})
