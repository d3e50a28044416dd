"""Confirmation requests: a token per (command, phone), the press that comes back, once.

The relay asks ``Confirmer.ask`` for each phone of a ``confirm`` command: a
phone whose format carries keys gets an ``Ask`` (a key labelled OK fetching
``[desk] url`` + ``/c/TOKEN``; the token is 128 random bits, kept hashed in
the store, expiring ``confirm_within`` + MARGIN seconds later); any other
phone is kept as ``unsupported`` and gets the text alone. The desk endpoint
hands each phone's GET to ``press``: the first press of a waiting token is
recorded and told to the listeners (the command's thread), a second changes
nothing, and an unknown or expired token, or one pressed from another
phone's address, is None.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from deskbot import failpoints
from deskbot.directory.snapshot import Phone
from deskbot.senders.base import Ask, can_confirm
from deskbot.sipuri import split_hostport
from deskbot.store.base import (
    NO_FOLLOW_UP,
    AuditError,
    Confirmation,
    Confirmations,
    FollowUp,
    Thread,
)

log = logging.getLogger("deskbot.confirm")

PREFIX = "/c/"
MARGIN = 300.0  # seconds a token outlives confirm_within: a late press still counts
TOKEN_BYTES = 16
MAX_TOKEN_CHARS = 64
TOKEN_CHARS = len(secrets.token_urlsafe(TOKEN_BYTES))  # 22: every token is this long

WAITING, CONFIRMED, UNSUPPORTED = "waiting", "confirmed", "unsupported"
NOT_CONFIRMED = "not confirmed"


def host_of(phone: Phone) -> str:
    """The phone's address when it is an IP literal (a press must come from it), else ""."""
    if phone.http:
        host = urlsplit(phone.http).hostname or ""
    else:
        hostport = phone.uri.removeprefix("sip:").split(";")[0].rpartition("@")[2]
        host = split_hostport(hostport)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""  # a name: where its presses come from cannot be told


def sample_ask(desk_url: str) -> Ask:
    """A key as long as any ``ask`` makes on ``desk_url``: what the size check counts."""
    return Ask(f"{desk_url.rstrip('/')}{PREFIX}{'A' * TOKEN_CHARS}")


def keyed(phone: Phone) -> bool:
    """Whether ``phone``'s screen carries the OK key: a format with keys, sent by this
    deskbot (an edge's phones would press into the office's network, not ``[desk]``)."""
    return not phone.site and can_confirm(phone.format)


def why_not(format: str, site: str = "") -> str:
    if site:  # the edge sends the screen without a key: its presses would not reach us
        return f"cannot confirm (behind site {site}'s edge)"
    return f"cannot confirm (format {format})"


class Confirmer:
    def __init__(self, store: Confirmations, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock
        self.on_confirm: list[Callable[[Confirmation], None]] = []

    def remember(
        self, command_id: int, where: Thread, within: float, follow: FollowUp = NO_FOLLOW_UP
    ) -> None:
        """Where the command was given, and what follows a press or confirm_within (who is
        told, the alert silenced); raises AuditError when it cannot be kept."""
        self.store.remember(command_id, where, self.clock() + within, follow)

    def rethread(self, command_id: int, thread: str) -> None:
        """The command's answer opened its thread only now: its confirmations go there too."""
        try:
            self.store.rethread(command_id, thread)
        except AuditError as exc:  # posted where the command was given instead
            log.error("%s", exc)

    def ask(self, command_id: int, phone: Phone, desk_url: str, within: float) -> Ask | None:
        """Keep the phone's request and the key for its screen; None: its format has none.

        Raises AuditError when the store cannot keep it (the phone then gets no key)."""
        expires = self.clock() + within + MARGIN
        if not keyed(phone):
            self.store.ask(command_id, phone.extension, phone.format, None, "", expires)
            return None
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self.store.ask(command_id, phone.extension, phone.format, token, host_of(phone), expires)
        return Ask(f"{desk_url.rstrip('/')}{PREFIX}{token}")

    def press(self, path: str, host: str) -> Confirmation | None:
        """A phone's GET of ``path``: its request if the token is good (recorded the first time)."""
        token = path.removeprefix(PREFIX) if path.startswith(PREFIX) else ""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            host = str(ipaddress.ip_address(host.removeprefix("::ffff:")))
        except ValueError:
            host = ""
        try:
            found = self.store.press(token, host, self.clock())
        except AuditError as exc:
            log.error("%s", exc)
            return None
        if found is None:
            return None
        confirmation, first = found
        if first:
            log.info("command %d: %s confirmed", confirmation.command_id, confirmation.extension)
            failpoints.reached("before-confirm-post")  # recorded, not yet told to the thread
            for listener in self.on_confirm:
                try:
                    listener(confirmation)
                except Exception:  # a listener's bug must not lose the phone's answer
                    log.exception("a confirmation listener failed")
        return confirmation


def state_of(found: Confirmation | None, now: float) -> str | None:
    """A phone's confirm state as the API shows it; None: not asked."""
    if found is None:
        return None
    if found.state == WAITING and found.expires - MARGIN <= now:
        return NOT_CONFIRMED
    return found.state
