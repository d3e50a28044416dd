"""Templates and deferred sends as relay steps: `!firedrill time=3pm`, `in 20s ...`, `at 14:55`.

A template is expanded here, before the send goes through the relay's
checks like any typed text (its name goes to the audit log). A deferred send
is checked now (so a mistake is answered at once), kept in the store, and
carried out at its time by the schedule source with the key ``deferred:ID``,
through the same checks again (the sender may have lost access meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from deskbot import notices
from deskbot.directory.snapshot import Person
from deskbot.relay import grammar
from deskbot.relay.grammar import Later, UseTemplate
from deskbot.relay.values import SHELL, Answer, Dispatch, Policy, Request
from deskbot.store.base import AuditError, Deferred, LaterSends


class Planner(Protocol):
    """What a later send needs of the relay: its policy and store, and its checks."""

    policy: Policy
    deferred: LaterSends | None
    clock_wall: Callable[[], float]

    def send_of(
        self, request: Request, person: Person | None, admin: bool, command: grammar.Command
    ) -> Answer | Dispatch: ...

    def dispatch(
        self,
        request: Request,
        person: Person | None,
        admin: bool,
        targets: str,
        text: str,
        probe: bool = False,
        origin: str = "",
        confirm: bool = False,
        escalate_to: str = "",
    ) -> Answer | Dispatch: ...


MAX_LISTED = 20
MAX_PENDING = 20  # later sends one sender may have planned at once
MAX_PENDING_ADMIN = 200


def template_send(
    relay: Planner, request: Request, person: Person | None, admin: bool, use: UseTemplate
) -> Answer | Dispatch:
    """A template's text filled from the command, to the command's or the template's targets."""
    template = relay.policy.templates.get(use.name)
    if template is None:
        known = ", ".join(f"!{n}" for n in relay.policy.templates) or "none are configured"
        return Answer(
            f"there is no template !{use.name} (templates: {known}). Nothing was sent.",
            error=True,
            problem="unknown-template",
        )
    try:
        text = notices.fill(use.name, template.text, dict(use.values))
    except notices.TemplateError as exc:
        return Answer(f"{exc}. Nothing was sent.", error=True, problem="missing-variable")
    targets = use.targets or template.targets
    if not targets:
        return Answer(
            f"template !{use.name} has no targets of its own: write `TARGETS !{use.name} ...`. "
            "Nothing was sent.",
            error=True,
            problem="usage",
        )
    return relay.dispatch(
        request,
        person,
        admin,
        targets,
        text,
        origin=f"template:{use.name}",
        confirm=use.confirm or template.confirm or request.confirm,  # a schedule's too
        escalate_to=request.escalate_to or template.escalate_to or "",
    )


def templates_text(relay: Planner) -> Answer:
    templates = relay.policy.templates
    if not templates:
        return Answer("no templates are configured ([templates.NAME] in the config file)")
    lines = ["templates:"]
    for name, template in templates.items():
        values = " ".join(f"{v}=..." for v in notices.placeholders(template.text))
        to = f" → {template.targets}" if template.targets else " (give TARGETS first)"
        lines.append(f"• !{name} {values}".rstrip() + f"{to}: {template.text}")
    return Answer("\n".join(lines))


def defer(
    relay: Planner, request: Request, person: Person | None, admin: bool, later: Later
) -> Answer:
    """Check the send now and keep it for its time; the answer names the time and the id."""
    if request.user.chat == SHELL:  # a one-shot process cannot wait; `deskbot run` can
        return Answer(
            "`deskbot send` sends now only: plan later sends in chat (`deskbot run` keeps "
            "and sends them), or drop `in`/`at` to send now. Nothing was sent.",
            error=True,
            problem="usage",
        )
    if relay.deferred is None:
        return Answer("sends later need the audit log ([audit] path)", error=True, problem="usage")
    checked = relay.send_of(request, person, admin, grammar.parse(later.then))
    if isinstance(checked, Answer):
        return checked
    user = request.user
    mine = relay.deferred.pending(user.chat, user.id, person.name if person else None)
    most = MAX_PENDING_ADMIN if admin else MAX_PENDING
    if len(mine) >= most:
        return Answer(
            f"not planned: you have {len(mine)} sends planned, the most is {most}. "
            "`scheduled` lists them, `cancel ID` frees one.",
            error=True,
            problem="too-many-planned",
        )
    now = relay.clock_wall()
    fallback = relay.policy.message.timezone
    where, zone_name, known = notices.known_zone(request.timezone, fallback)
    note = ""
    if not known:
        theirs = grammar.one_line(request.timezone or "", 40)
        note = (
            f" (your time zone {theirs!r} is unknown here: read in {zone_name or 'the host zone'})"
        )
    if later.delay is not None:
        due = datetime.fromtimestamp(now + later.delay, where)
    else:
        assert later.clock is not None
        due = notices.next_at(*later.clock, now, where)
    plan = Deferred(
        0,
        due.timestamp(),
        zone_name,
        user.chat,
        user.id,
        user.display_name,
        person.name if person else None,
        request.place,
        request.thread,
        later.then,
    )
    try:
        deferred_id = relay.deferred.add(request.key, plan)
    except AuditError:
        return Answer(
            "not planned: deskbot cannot write its audit log. An admin should check its log.",
            error=True,
            problem="unrecorded",
        )
    names = ", ".join(p.title for p in checked.phones)
    when = notices.shown(due, seconds=later.delay is not None and later.delay < 3600, now=now)
    return Answer(f"will send {when} to {names}, id {deferred_id} (`cancel {deferred_id}`){note}")


def scheduled_text(relay: Planner, request: Request, person: Person | None, admin: bool) -> Answer:
    if relay.deferred is None:
        return Answer("sends later need the audit log ([audit] path)", error=True)
    user = request.user
    pending = (
        relay.deferred.pending(None, None, None)
        if admin
        else relay.deferred.pending(user.chat, user.id, person.name if person else None)
    )
    if not pending:
        return Answer("nothing is scheduled" + (" (by anyone)" if admin else " by you"))
    lines = [f"{len(pending)} scheduled send(s):"]
    for d in pending[:MAX_LISTED]:
        where = notices.known_zone(d.zone, relay.policy.message.timezone)[0]
        due = notices.shown(datetime.fromtimestamp(d.due, where), True, relay.clock_wall())
        who = f" by {d.person or d.display_name or d.sender_id}" if admin else ""
        lines.append(f"• id {d.id} {due}{who}: {d.command}")
    if len(pending) > MAX_LISTED:
        lines.append(f"… and {len(pending) - MAX_LISTED} more")
    return Answer("\n".join(lines))


def cancel(
    relay: Planner, request: Request, person: Person | None, admin: bool, deferred_id: int
) -> Answer:
    if relay.deferred is None:
        return Answer("sends later need the audit log ([audit] path)", error=True)
    found = relay.deferred.get(deferred_id)
    user = request.user
    mine = found is not None and (
        (person is not None and found.person == person.name)
        or (found.chat, found.sender_id) == (user.chat, user.id)
    )
    if found is None or not (mine or admin):
        return Answer(
            f"no pending send with id {deferred_id} of yours: `scheduled` lists them",
            error=True,
            problem="unknown-id",
        )
    if not relay.deferred.close(deferred_id, "cancelled"):
        return Answer(f"send {deferred_id} is already on its way or done", error=True)
    return Answer(f"cancelled send {deferred_id}: {found.command}")
