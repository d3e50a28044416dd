"""The one place for policy: who may send, to whom, how much and how often.

Adapters hand in ``(ChatUser, text)`` and get back either an ``Answer``
(help, who, history, refusals: nothing is sent) or a ``Dispatch`` to pass to
``deliver``, which fans out to the phones and returns a ``Report``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deskbot import commands, report
from deskbot.commands import Help, History, Send, UsageError, Who
from deskbot.config import Settings
from deskbot.delivery import Delivery, Sender
from deskbot.directory import Directory, Person, Phone, TargetError
from deskbot.sip import protocol
from deskbot.store import AuditLog

log = logging.getLogger("deskbot.relay")

SHELL = "shell"  # the operator at the shell: trusted like an admin


@dataclass(frozen=True, slots=True)
class ChatUser:
    chat: str  # "slack", "matrix", "console" or "shell"
    id: str  # the platform's user id
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply that sends nothing. ``error``: the command was refused or malformed."""

    text: str
    error: bool = False


@dataclass
class Dispatch:
    user: ChatUser
    person: Person | None
    targets: str
    text: str  # as typed (cleaned)
    body: str  # what the phone shows
    phones: tuple[Phone, ...]
    groups: tuple[str, ...]
    place: str = ""
    skipped: dict[str, str] = field(default_factory=dict)  # extension -> why not sent
    command_id: int = 0

    @property
    def title(self) -> str:
        who = self.person.display if self.person else (self.user.display_name or self.user.id)
        names = ", ".join(p.title for p in self.phones)
        return f"{who} → {names}: {self.text}"


class SlidingWindow:
    """At most ``limit`` events per key in any ``window`` seconds."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        self.limit, self.window, self.clock = limit, window, clock
        self.events: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )

    def retry_after(self, key: str) -> float:
        """Seconds until one more event fits; 0 when it fits now."""
        now = self.clock()
        q = self.events[key]
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) < self.limit:
            return 0.0
        return q[len(q) - self.limit] + self.window - now

    def add(self, key: str) -> None:
        self.events[key].append(self.clock())


class Relay:
    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sender = sender
        self.audit = audit
        self.on_report: list[Callable[[Dispatch, report.Report], None]] = []
        self.sender_limit = SlidingWindow(settings.limits.per_sender_per_minute, clock=clock)
        self.phone_limit = SlidingWindow(settings.limits.per_phone_per_minute, clock=clock)
        self.apply(settings)

    def apply(self, settings: Settings) -> None:
        """Take a new directory and policy (live reload); rate history is kept."""
        self.settings = settings
        self.directory = Directory(settings)
        self.sender_limit.limit = settings.limits.per_sender_per_minute
        self.phone_limit.limit = settings.limits.per_phone_per_minute

    # -- policy ---------------------------------------------------------------
    def person_of(self, user: ChatUser) -> Person | None:
        return self.directory.person_by_chat(user.chat, user.id)

    def is_admin(self, user: ChatUser, person: Person | None) -> bool:
        return user.chat == SHELL or bool(person and person.name in self.settings.access.admins)

    def may_send(self, user: ChatUser, person: Person | None) -> bool:
        senders = self.settings.access.senders
        if user.chat == SHELL or senders == "*":
            return True
        return person is not None and person.name in senders

    # -- commands ---------------------------------------------------------------
    def prepare(self, user: ChatUser, text: str, place: str = "") -> Answer | Dispatch:
        """Parse and authorize a command; nothing is sent yet."""
        person = self.person_of(user)
        if not self.may_send(user, person):
            log.warning("refused %s user %s: not in [access] senders", user.chat, user.id)
            return Answer(
                "you are not allowed to send to desk phones: ask an admin to add "
                "you to [access] senders",
                error=True,
            )
        try:
            command = commands.parse(text)
        except UsageError as exc:
            return Answer(str(exc), error=True)
        match command:
            case Help():
                return Answer(self.help_text())
            case Who(target):
                return self.who(target, show_uris=self.is_admin(user, person))
            case History(everyone):
                return self.history(user, person, everyone)
            case Send(targets, body_text):
                return self.dispatch(user, person, targets, body_text, place)

    def dispatch(
        self, user: ChatUser, person: Person | None, targets: str, text: str, place: str
    ) -> Answer | Dispatch:
        limit = self.settings.message.max_chars
        if len(text) > limit:
            return Answer(
                f"text too long: {len(text)} characters, the limit is {limit}. "
                "Shorten it; nothing was sent.",
                error=True,
            )
        try:
            resolution = self.directory.resolve(targets)
        except TargetError as exc:
            return Answer(f"{exc}. Nothing was sent.", error=True)
        admin = self.is_admin(user, person)
        phones = resolution.phones
        max_group = self.settings.limits.max_group_size
        if len(phones) > max_group and not admin:
            return Answer(
                f"{targets} is {len(phones)} phones; you may send to at most "
                f"{max_group} at once (admins may send to more). Nothing was sent.",
                error=True,
            )
        body = self.body(user, person, text)
        if len(body.encode()) > protocol.MAX_BODY_BYTES:
            return Answer(
                f"text too long: {len(body.encode())} bytes, a SIP message takes "
                f"{protocol.MAX_BODY_BYTES}. Shorten it; nothing was sent.",
                error=True,
            )
        if user.chat != SHELL:
            key = f"{user.chat}:{user.id}"
            wait = self.sender_limit.retry_after(key)
            if wait > 0:
                return Answer(
                    f"slow down: you may send {self.sender_limit.limit} commands a "
                    f"minute; try again in {wait:.0f} s. Nothing was sent.",
                    error=True,
                )
            self.sender_limit.add(key)
        skipped: dict[str, str] = {}
        for phone in phones:
            wait = self.phone_limit.retry_after(phone.extension)
            if wait > 0:
                skipped[phone.extension] = (
                    f"{phone.extension} got {self.phone_limit.limit} messages in the last "
                    f"minute; try again in {wait:.0f} s"
                )
            else:
                self.phone_limit.add(phone.extension)
        return Dispatch(
            user, person, targets, text, body, phones, resolution.groups, place, skipped
        )

    def body(self, user: ChatUser, person: Person | None, text: str) -> str:
        if not self.settings.message.sender_prefix or user.chat == SHELL:
            return text
        name = person.display if person else commands.clean_text(user.display_name or user.id)
        return f"{name[:40]}: {text}"

    async def deliver(self, job: Dispatch) -> report.Report:
        """Send to every phone of the job at once; the sender caps concurrency."""
        started = time.perf_counter()
        if self.audit:
            job.command_id = self.audit.command(
                chat=job.user.chat,
                sender_id=job.user.id,
                person=job.person.name if job.person else None,
                place=job.place,
                targets=job.targets,
                text_chars=len(job.text),
                phones=len(job.phones),
            )
        to_send = [p for p in job.phones if p.extension not in job.skipped]
        results = await asyncio.gather(*(self.sender.send(p.uri, job.body) for p in to_send))
        sent: dict[str, Delivery] = {p.extension: d for p, d in zip(to_send, results, strict=True)}
        lines = [
            report.Line(p, sent.get(p.extension), job.skipped.get(p.extension, ""))
            for p in job.phones
        ]
        result = report.Report(summary_wanted=len(job.phones) > 1 or bool(job.groups), lines=lines)
        if self.audit:
            self.audit.deliveries(
                job.command_id,
                [(ext, d.uri, d.code, d.reason, d.elapsed_ms) for ext, d in sent.items()],
            )
        log.info(
            "command %d from %s:%s: %s in %.1f ms",
            job.command_id,
            job.user.chat,
            job.user.id,
            report.summary_text(result),
            (time.perf_counter() - started) * 1000,
        )
        for listener in self.on_report:
            listener(job, result)
        return result

    async def handle(self, user: ChatUser, text: str, place: str = "") -> Answer | report.Report:
        prepared = self.prepare(user, text, place)
        if isinstance(prepared, Answer):
            return prepared
        return await self.deliver(prepared)

    # -- answers that send nothing -------------------------------------------
    def help_text(self) -> str:
        d = self.directory
        groups = ", ".join(f"@{g}" for g in sorted(d.groups)) or "none"
        return "\n".join(
            [
                "Send a text to desk phones: `TARGETS TEXT`, like `486 meeting moved` or "
                "`@sales lunch is here`.",
                "TARGETS: an extension (`486`), a person (`alice`), a group (`@sales`), a mention, "
                "or several joined by commas (`486,alice,@sales`).",
                f"Text: up to {self.settings.message.max_chars} characters.",
                "`who TARGET` shows where a target goes; `history` lists your last sends "
                "(`history all` for admins).",
                f"Groups: {groups}. Phones in the directory: {len(d.phones)}.",
            ]
        )

    def who(self, target: str, show_uris: bool = False) -> Answer:
        """Where a target goes; phone addresses only for admins (they are network details)."""
        try:
            resolution = self.directory.resolve(target)
        except TargetError as exc:
            return Answer(str(exc), error=True)
        lines = [f"{target} → {len(resolution.phones)} phone(s):"]
        lines += [
            f"• {p.title} at {p.uri}" if show_uris else f"• {p.title}"
            for p in resolution.phones[:50]
        ]
        if len(resolution.phones) > 50:
            lines.append(f"… and {len(resolution.phones) - 50} more")
        return Answer("\n".join(lines))

    def history(self, user: ChatUser, person: Person | None, everyone: bool) -> Answer:
        if self.audit is None:
            return Answer("history is not kept: no [audit] path is configured", error=True)
        if everyone and not self.is_admin(user, person):
            return Answer(
                "only admins may see everyone's history; `history` shows yours", error=True
            )
        entries = self.audit.history(
            chat=None if everyone else user.chat,
            sender_id=None if everyone else user.id,
            person=None if everyone or person is None else person.name,
        )
        if not entries:
            return Answer("no sends yet")
        lines = ["Last sends" + (" (everyone):" if everyone else ":")]
        for e in entries:
            stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.ts))
            who = f"{e.who} " if everyone else ""
            lines.append(
                f"• {stamp} {who}→ {e.targets} ({e.text_chars} chars): "
                f"{e.delivered}/{e.phones} delivered"
                + (f" [{_short(e.answers)}]" if e.answers else "")
            )
        return Answer("\n".join(lines))


def _short(answers: str, limit: int = 80) -> str:
    return answers if len(answers) <= limit else answers[: limit - 1] + "…"
