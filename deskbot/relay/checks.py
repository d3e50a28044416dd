"""The named checks every send passes, in order; the first refusal is the answer.

Each check reads what it needs of the relay through ``Scope`` and returns an
``Answer`` (nothing is sent) or None. ``phone_rate`` is not a refusal: it
names the phones over their limit, which are skipped while the others get
the text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from deskbot.directory.snapshot import Directory, TargetError
from deskbot.relay.confirm import sample_ask
from deskbot.relay.values import API, SHELL, Answer, Dispatch, Policy
from deskbot.relay.window import Window
from deskbot.senders.base import Sender, body_limit, can_confirm, maker_of, wire_bytes

log = logging.getLogger("deskbot.relay")


class Scope(Protocol):
    """What the checks read of the relay."""

    sender: Sender
    directory: Directory
    policy: Policy
    sender_limit: Window
    phone_limit: Window
    clock_wall: Callable[[], float]
    reachable: dict[str, frozenset[str]]  # API client -> its extensions, per directory snapshot


def within_scope(relay: Scope, job: Dispatch) -> Answer | None:
    """An API client with a targets list reaches only the phones those targets resolve to."""
    if job.user.chat != API or job.user.id not in relay.policy.scopes:
        return None
    allowed = relay.policy.scopes[job.user.id]
    reachable = relay.reachable.get(job.user.id)
    if reachable is None:  # once per client and directory snapshot, not once per request
        found: set[str] = set()
        for target in allowed:
            try:
                found.update(p.extension for p in relay.directory.resolve(target).phones)
            except TargetError:
                log.warning("api client %s: its target %r does not resolve", job.user.id, target)
        reachable = relay.reachable[job.user.id] = frozenset(found)
    outside = [p.extension for p in job.phones if p.extension not in reachable]
    if not outside:
        return None
    return Answer(
        f"client {job.user.id} may not send to {', '.join(outside[:10])}: its targets are "
        f"{', '.join(allowed)} ([api.clients.{job.user.id}] targets). Nothing was sent.",
        error=True,
        problem="forbidden",
    )


def escalation(relay: Scope, job: Dispatch) -> Answer | None:
    """Who is told of the phones that did not confirm is a target this sender may reach."""
    if not job.escalate_to:
        return None
    try:
        phones = relay.directory.resolve(job.escalate_to).phones
    except TargetError as exc:
        why = f"escalate_to: {exc}. Nothing was sent."
        return Answer(why, error=True, problem="unknown-target")
    refused = within_scope(relay, replace(job, targets=job.escalate_to, phones=phones))
    if refused is not None:
        return replace(refused, text=f"escalate_to: {refused.text}")
    return None


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
    sip_most = relay.sender.max_body_bytes
    ask = sample_ask(relay.policy.desk_url) if job.confirm else None  # its key's XML counts
    over = []
    for fmt in dict.fromkeys(p.format for p in job.phones):
        size, most = wire_bytes(fmt, job.body, job.sender_name, ask), body_limit(fmt, sip_most)
        if size > most:
            over.append((size - most, fmt, size, most))
    if not over:
        return None
    _, fmt, size, most = max(over)
    maker = maker_of(fmt)
    keyed = " with the OK key" if ask is not None and can_confirm(fmt) else ""
    on = f" on {maker} phones, escaped as XML{keyed}," if maker else ""
    where = "a SIP message" if most == sip_most else f"a {maker} screen"
    return Answer(
        f"text too long: {size} bytes{on} where {where} takes {most}. "
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
    return _slow_down(relay, wait) if wait > 0 else None


def over_rate(relay: Scope, job: Dispatch) -> Answer | None:
    """The sender's rate refusal, if any, without taking a slot (a look before costly work)."""
    if job.user.chat == SHELL:
        return None
    wait = relay.sender_limit.retry_after(f"{job.user.chat}:{job.user.id}")
    return _slow_down(relay, wait) if wait > 0 else None


def _slow_down(relay: Scope, wait: float) -> Answer:
    return Answer(
        f"slow down: you may send {relay.sender_limit.limit} commands a "
        f"minute; try again in {wait:.0f} s. Nothing was sent.",
        error=True,
        problem="rate-limited",
        retry_after=wait,
    )


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
IN_ORDER: tuple[Check, ...] = (within_scope, escalation, fresh, group_size, body_fits, sender_rate)
