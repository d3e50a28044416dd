"""The named checks every send passes, in order; the first refusal is the answer.

Each check reads what it needs of the relay through ``Scope`` and returns an
``Answer`` (nothing is sent) or None. ``phone_rate`` is not a refusal: it
names the phones over their limit, which are skipped while the others get
the text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from deskbot.directory.snapshot import INFOBOX, MESSAGE, Directory, TargetError
from deskbot.relay.values import API, SHELL, Answer, Dispatch, Policy
from deskbot.relay.window import Window
from deskbot.senders.base import Sender, wire_bytes

log = logging.getLogger("deskbot.relay")


class Scope(Protocol):
    """What the checks read of the relay."""

    sender: Sender
    directory: Directory
    policy: Policy
    sender_limit: Window
    phone_limit: Window
    clock_wall: Callable[[], float]


def within_scope(relay: Scope, job: Dispatch) -> Answer | None:
    """An API client with a targets list reaches only the phones those targets resolve to."""
    if job.user.chat != API or job.user.id not in relay.policy.scopes:
        return None
    allowed = relay.policy.scopes[job.user.id]
    reachable: set[str] = set()
    for target in allowed:
        try:
            reachable.update(p.extension for p in relay.directory.resolve(target).phones)
        except TargetError:
            log.warning("api client %s: its target %r does not resolve", job.user.id, target)
    outside = [p.extension for p in job.phones if p.extension not in reachable]
    if not outside:
        return None
    return Answer(
        f"client {job.user.id} may not send to {', '.join(outside[:10])}: its targets are "
        f"{', '.join(allowed)} ([api.clients.{job.user.id}] targets). Nothing was sent.",
        error=True,
        problem="forbidden",
    )


def fresh(relay: Scope, job: Dispatch) -> Answer | None:
    """A command that waited too long (deskbot was down) is answered, not sent."""
    sent_at, most = job.request.sent_at, relay.policy.message.max_age
    if sent_at is None or most <= 0:
        return None
    waited = relay.clock_wall() - sent_at
    if waited <= most:
        return None
    return Answer(
        f"not sent: this command waited {duration(waited)} while deskbot was down; "
        "send it again if it still matters",
        error=True,
        problem="stale",
    )


def group_size(relay: Scope, job: Dispatch) -> Answer | None:
    most = relay.policy.limits.max_group_size
    if len(job.phones) <= most or job.admin:
        return None
    return Answer(
        f"{job.targets} is {len(job.phones)} phones; you may send to at most "
        f"{most} at once (admins may send to more). Nothing was sent.",
        error=True,
        problem="group-too-large",
    )


def body_fits(relay: Scope, job: Dispatch) -> Answer | None:
    """Every phone's body fits, in its own format: else none is sent (not a 413 for some)."""
    most = relay.sender.max_body_bytes
    sizes = {f: wire_bytes(f, job.body) for f in {p.format for p in job.phones}}
    fmt, size = max(sizes.items(), key=lambda item: item[1], default=(MESSAGE, 0))
    if size <= most:
        return None
    on = " on Snom Infobox phones, escaped as XML," if fmt == INFOBOX else ""
    return Answer(
        f"text too long: {size} bytes{on} where a SIP message takes {most}. "
        "Shorten it; nothing was sent.",
        error=True,
        problem="too-long",
    )


def sender_rate(relay: Scope, job: Dispatch) -> Answer | None:
    """The last check: a command that passes it takes its slot, since it will be sent."""
    if job.user.chat == SHELL:
        return None
    key = f"{job.user.chat}:{job.user.id}"
    wait = relay.sender_limit.take([key], job.request.key or "")[key]  # taken when it fits
    if wait > 0:
        return Answer(
            f"slow down: you may send {relay.sender_limit.limit} commands a "
            f"minute; try again in {wait:.0f} s. Nothing was sent.",
            error=True,
            problem="rate-limited",
            retry_after=wait,
        )
    return None


def phone_rate(relay: Scope, job: Dispatch) -> dict[str, str]:
    """Phones over their limit (extension -> why not sent); the others take a slot."""
    skipped: dict[str, str] = {}
    waits = relay.phone_limit.take([p.extension for p in job.phones], job.request.key or "")
    for phone in job.phones:
        wait = waits[phone.extension]
        if wait > 0:
            skipped[phone.extension] = (
                f"{phone.extension} got {relay.phone_limit.limit} messages in the last "
                f"minute; try again in {wait:.0f} s"
            )
    return skipped


def duration(seconds: float) -> str:
    """7.5 -> '8 s'; 8040 -> '2 h 14 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


Check = Callable[[Scope, Dispatch], Answer | None]
IN_ORDER: tuple[Check, ...] = (within_scope, fresh, group_size, body_fits, sender_rate)
