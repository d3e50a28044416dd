"""The one place for policy: who may send, to whom, how much and how often.

A source hands in a ``Request`` and gets back either an ``Answer`` (help,
who, history, refusals: nothing is sent) or a ``Dispatch`` to pass to
``deliver``, which fans out to the phones and returns a ``Report``. The
relay holds a directory snapshot and a policy (``use`` swaps both at a
reload) and talks to one ``Sender``; it knows no chat platform and no SIP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from deskbot import failpoints
from deskbot.directory.snapshot import Directory, Person, Phone, TargetError
from deskbot.relay import checks, grammar, later, report
from deskbot.relay.confirm import Confirmer, why_not
from deskbot.relay.grammar import (
    Cancel,
    Help,
    History,
    Later,
    Probe,
    Scheduled,
    Send,
    Templates,
    UsageError,
    UseTemplate,
    Who,
)
from deskbot.relay.replay import replayed
from deskbot.relay.values import (
    API,
    SCHEDULE,
    SHELL,
    Accepted,
    Answer,
    ChatUser,
    Dispatch,
    Elsewhere,
    NotRecorded,
    Policy,
    Replay,
    Request,
)
from deskbot.relay.window import SharedWindow, SlidingWindow, Window
from deskbot.senders import fair
from deskbot.senders.base import TITLE, Ask, Delivery, Sender, send_all
from deskbot.store.base import Answer as Recorded
from deskbot.store.base import (
    AuditError,
    CommandLog,
    FollowUp,
    LaterSends,
    Planned,
    Seen,
    Taken,
    Thread,
)

log = logging.getLogger("deskbot.relay")

MAX_RAW_TIMES = 4  # a text over 4x max_chars (before cleaning) is refused uncleaned
FLUSH_AFTER = 0.02  # seconds a phone's answer may wait to be written with others


class Relay:
    def __init__(
        self,
        sender: Sender,
        directory: Directory,
        policy: Policy,
        audit: CommandLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sender = sender
        self.audit = audit
        self.deferred: LaterSends | None = audit.deferred_sends() if audit else None
        confirms = audit.confirmations() if audit else None  # None: no confirmations here
        self.confirmer = Confirmer(confirms) if confirms is not None else None
        self.on_report: list[Callable[[Dispatch, report.Report], None]] = []
        self.on_refusal: list[Callable[[Answer], None]] = []  # a check refused a command
        # each phone's answer as it comes: (command id, phone, delivery), for live views
        self.on_delivery: list[Callable[[int, Phone, Delivery], None]] = []
        self.last_probe: tuple[float, report.Report] | None = None  # (epoch, probe_all's)
        limits = policy.limits
        self.sender_limit: Window = SlidingWindow(limits.per_sender_per_minute, clock=clock)
        self.phone_limit: Window = SlidingWindow(limits.per_phone_per_minute, clock=clock)
        if audit is not None and audit.shared:  # replicas: one count for all of them
            self.sender_limit = SharedWindow(audit, "sender", limits.per_sender_per_minute)
            self.phone_limit = SharedWindow(audit, "phone", limits.per_phone_per_minute)
        self.checks: tuple[checks.Check, ...] = checks.IN_ORDER
        self.clock_wall: Callable[[], float] = time.time
        self._flushing: asyncio.TimerHandle | None = None
        self._running: set[str] = set()  # keys of commands this process is sending now
        # commands this replica holds until their reply reached the chat: id -> key
        self.held: dict[int, str] = {}
        self.takeovers = 0  # commands of another replica (or an earlier run) answered here
        self.use(directory, policy)

    def use(self, directory: Directory, policy: Policy) -> None:
        """Take a new directory snapshot and policy (live reload); rate history is kept."""
        self.directory = directory
        self.policy = policy
        self.reachable: dict[str, frozenset[str]] = {}  # filled by checks.within_scope
        self.sender_limit.limit = policy.limits.per_sender_per_minute
        self.phone_limit.limit = policy.limits.per_phone_per_minute

    # -- what sources ask ---------------------------------------------------------
    def person_of(self, user: ChatUser) -> Person | None:
        return self.directory.person_by(user.chat, user.id)

    def admin_ids(self, source: str) -> list[str]:
        """The admins' user ids on one source (for notices only admins should see)."""
        people = (self.directory.people.get(name) for name in self.policy.access.admins)
        return [p.ids[source] for p in people if p is not None and source in p.ids]

    def allows(self, user: ChatUser) -> bool:
        """May this user command the bot, or bring it into a room."""
        return self.may_send(user, self.person_of(user))

    @property
    def patience(self) -> float:
        """Seconds a send may take before every phone has its answer."""
        return self.sender.timeout

    # -- policy -------------------------------------------------------------------
    def is_admin(self, user: ChatUser, person: Person | None) -> bool:
        if user.chat in (SHELL, SCHEDULE):  # the operator, or what the operator configured
            return True
        return bool(person and person.name in self.policy.access.admins)

    def may_send(self, user: ChatUser, person: Person | None) -> bool:
        senders = self.policy.access.senders
        if user.chat == API:  # known by its token; still in the config since a reload?
            return user.id in self.policy.clients
        if user.chat == SCHEDULE:
            return user.id in self.policy.schedules
        if user.chat == SHELL or senders == "*":
            return True
        return person is not None and person.name in senders

    # -- commands -------------------------------------------------------------------
    def prepare(self, request: Request) -> Answer | Dispatch | Replay:
        """Parse and authorize a command; nothing is sent yet."""
        if request.key in self._running:  # the first copy is being sent: it answers
            log.info("command %s came in again while it is being sent", request.key)
            return Replay(None)
        if request.key and self.audit:
            seen = self.audit.seen(request.key, within=request.key_window)
            if seen is not None:
                log.info("command %s came in again: not sent again", request.key)
                again = not seen.answered or request.answer_repeats
                if not again or not seen.command_id:
                    return Replay(None)
                if not seen.answered and not self._claim(request.key, seen):
                    log.info("command %s is another replica's: it answers", request.key)
                    return Replay(None)
                return Replay(replayed(seen))
        user = request.user
        person = self.person_of(user)
        if not self.may_send(user, person) and user.chat == API:
            log.warning("refused api client %s: no longer in [api.clients]", user.id)
            return Answer(
                f"client {user.id} is no longer in [api.clients]; nothing was sent",
                error=True,
                problem="not-allowed",
            )
        if not self.may_send(user, person):
            log.warning("refused %s user %s: not in [access] senders", user.chat, user.id)
            return Answer(
                "you are not allowed to send to desk phones: ask an admin to add you to "
                f"[people] with your {user.chat.title()} id {user.id}, and to [access] senders",
                error=True,
                problem="not-allowed",
            )
        admin = self.is_admin(user, person)
        if request.targets is not None:
            if len(request.text) > MAX_RAW_TIMES * self.policy.message.max_chars + 100:
                return self.too_long(len(request.text))  # not cleaned character by character
            text = grammar.clean_text(request.text)
            if not text:
                return Answer(
                    "the text is empty: nothing to send", error=True, problem="empty-text"
                )
            return self.dispatch(
                request, person, admin, request.targets, text, confirm=request.confirm
            )
        try:
            command = grammar.parse(request.text)
        except UsageError as exc:
            return Answer(str(exc), error=True, problem="usage")
        match command:
            case Help():
                return Answer(
                    report.help_text(self.directory, self.policy.message.max_chars, admin)
                )
            case Who(target):
                return self.who(target, show_uris=admin)
            case History(everyone):
                return self.history(user, person, everyone, admin)
            case Send() | UseTemplate():
                return self.send_of(request, person, admin, command)
            case Templates():
                return later.templates_text(self)
            case Later():
                return later.defer(self, request, person, admin, command)
            case Scheduled():
                return later.scheduled_text(self, request, person, admin)
            case Probe(targets):
                if not admin:
                    return Answer(
                        "only admins may probe phones; `who TARGET` shows where a target goes",
                        error=True,
                    )
                return self.dispatch(request, person, admin, targets, "", probe=True)
            case Cancel(deferred_id):
                return later.cancel(self, request, person, admin, deferred_id)
        raise AssertionError(f"unhandled command {command!r}")

    def _claim(self, key: str, seen: Seen) -> bool:
        """An unanswered command: this replica answers it if it wins the claim (its owner's
        hold expired, or it was this replica's before a restart); held until answered."""
        assert self.audit is not None and seen.command_id is not None
        if not self.audit.claim(seen.command_id, seen.epoch):
            return False
        if seen.owner not in ("", self.audit.replica):
            self.takeovers += 1
            log.warning("took over command %s of replica %s", key, seen.owner)
        self.held[seen.command_id] = key
        return True

    def send_of(
        self, request: Request, person: Person | None, admin: bool, command: grammar.Command
    ) -> Answer | Dispatch:
        """A typed send or a template send, checked; any other command is a usage error."""
        if isinstance(command, Send):
            return self.dispatch(
                request, person, admin, command.targets, command.text, confirm=command.confirm
            )
        if isinstance(command, UseTemplate):
            return later.template_send(self, request, person, admin, command)
        return Answer(grammar.LATER_USAGE, error=True, problem="usage")

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
    ) -> Answer | Dispatch:
        """A send (or probe) command through each check in turn; the first refusal is the answer."""
        if confirm and (self.confirmer is None or not self.policy.desk_url):
            return Answer(
                "cannot ask for confirmations: they need [audit] and [desk] url (the address "
                "phones fetch their confirm key from). Nothing was sent.",
                error=True,
                problem="no-confirm",
            )
        if len(text) > self.policy.message.max_chars:
            return self.too_long(len(text))
        try:
            resolution = self.directory.resolve(targets)
        except TargetError as exc:
            return Answer(f"{exc}. Nothing was sent.", error=True, problem="unknown-target")
        job = Dispatch(
            request,
            person,
            admin,
            targets,
            text,
            "" if probe else self.body(request.user, person, text),
            resolution.phones,
            resolution.groups,
            probe=probe,
            origin=" ".join(filter(None, (self._scheduled_by(request), origin))),
            confirm=confirm,
            escalate_to=(escalate_to or request.escalate_to) if confirm else "",
        )
        for check in self.checks:
            refusal = check(self, job)
            if refusal is not None:
                for listener in self.on_refusal:
                    listener(refusal)
                return refusal
        return job

    def too_long(self, length: int) -> Answer:
        return Answer(
            f"text too long: {length} characters, the limit is {self.policy.message.max_chars}. "
            "Shorten it; nothing was sent.",
            error=True,
            problem="too-long",
        )

    def screen(self, request: Request) -> Answer | None:
        """The cheap refusals, before a source does costly work for ``request`` (an alert
        notification's text): may the sender send, may it reach the targets, is it over its
        rate. Nothing is taken; ``prepare`` checks everything again."""
        person = self.person_of(request.user)
        if not self.may_send(request.user, person):
            why = f"{request.user.id} may not send: nothing was sent"
            return Answer(why, error=True, problem="not-allowed")
        try:
            resolution = self.directory.resolve(request.targets or "")
        except TargetError as exc:
            return Answer(f"{exc}. Nothing was sent.", error=True, problem="unknown-target")
        admin = self.is_admin(request.user, person)
        job = Dispatch(request, person, admin, request.targets or "", "", "", resolution.phones, ())
        return checks.within_scope(self, job) or checks.over_rate(self, job)

    @staticmethod
    def _scheduled_by(request: Request) -> str:
        return f"schedule:{request.user.id}" if request.user.chat == SCHEDULE else ""

    def body(self, user: ChatUser, person: Person | None, text: str) -> str:
        if not self.policy.message.sender_prefix or user.chat == SHELL:
            return text
        # a name chosen by the sender can never add a line or reorder the screen
        name = person.display if person else grammar.one_line(user.display_name)
        return f"{grammar.one_line(name) or grammar.one_line(user.id)}: {text}"

    async def deliver(self, job: Dispatch) -> report.Report:
        """Record the command, send to every phone of the job at once, record each answer.

        Raises NotRecorded, sending nothing, when the audit log cannot take the command.
        """
        return await self.fan_out(self.accept(job))

    def accept(self, job: Dispatch) -> Accepted:
        """The first half of ``deliver``, without waiting: the command is durably recorded.

        Every source calls it right after ``prepare``, with no await between, so a
        repeat of the command arriving meanwhile finds its key. Raises NotRecorded.
        A probe shows nothing and is not recorded.
        """
        started = time.perf_counter()
        if job.probe:
            return Accepted(job, 0, {}, started)
        skipped = checks.phone_rate(self, job)
        failpoints.reached("before-record")
        command_id = self._record(job, skipped)
        failpoints.reached("after-record")
        if job.request.key:
            self._running.add(job.request.key)
            self.held[command_id] = job.request.key
        return Accepted(job, command_id, skipped, started)

    async def fan_out(self, accepted: Accepted) -> report.Report:
        """The second half of ``deliver``: every phone at once, each answer recorded."""
        job, command_id, skipped = accepted.job, accepted.command_id, accepted.skipped
        if job.probe:
            return await self._probe(job, accepted.started)
        request = job.request
        to_send = [p for p in job.phones if p.extension not in skipped]
        fair.COMMAND.set(object())  # this fan-out's sends share the sender's slots with others
        TITLE.set(job.sender_name)  # the title of its screens, for formats that have one
        try:
            asks = self._asks(job, command_id, to_send)
            items = [(p, job.body, asks.get(p.extension)) for p in to_send]
            results = await send_all(  # one callback per answer; no task per phone on SIP
                self.sender, items, lambda i, d: self._answer(command_id, to_send[i], d)
            )
            if self.audit:
                self.audit.finish(command_id)
        finally:
            self._running.discard(request.key)
        failpoints.reached("after-send")
        sent: dict[str, Delivery] = {p.extension: d for p, d in zip(to_send, results, strict=True)}
        lines = [
            report.Line(
                p,
                sent.get(p.extension),
                skipped.get(p.extension, ""),
                confirm=self._asked(job, p, asks),
            )
            for p in job.phones
        ]
        result = report.Report(
            summary_wanted=len(job.phones) > 1 or bool(job.groups),
            lines=lines,
            seconds=time.perf_counter() - accepted.started,
            command_id=command_id,
        )
        log.info(
            "command %d from %s:%s: %s in %.1f ms",
            command_id,
            request.user.chat,
            request.user.id,
            report.summary_text(result),
            result.seconds * 1000,
        )
        for listener in self.on_report:
            listener(job, result)
        return result

    async def _probe(self, job: Dispatch, started: float) -> report.Report:
        """Ask every phone at once; nothing is shown, so no phone limit and no audit entry."""
        result = await self._probe_phones(job.phones, len(job.phones) > 1 or bool(job.groups))
        log.info(
            "probe from %s:%s: %s in %.1f ms",
            job.user.chat,
            job.user.id,
            report.summary_text(result),
            (time.perf_counter() - started) * 1000,
        )
        return result

    async def probe_all(self) -> report.Report:
        """Every phone of the directory (the periodic probe of `deskbot run`): no command."""
        result = await self._probe_phones(tuple(self.directory.phones.values()), True)
        self.last_probe = (self.clock_wall(), result)
        return result

    async def _probe_phones(self, phones: tuple[Phone, ...], summary: bool) -> report.Report:
        results = await asyncio.gather(*(self.sender.probe(p) for p in phones))
        lines = [report.Line(p, d, probe=True) for p, d in zip(phones, results, strict=True)]
        return report.Report(summary_wanted=summary, lines=lines, probe=True)

    def _record(self, job: Dispatch, skipped: dict[str, str]) -> int:
        if self.audit is None:
            return 0
        request = job.request
        plan = [
            Planned(p.extension, p.uri, p.label, skipped.get(p.extension, "")) for p in job.phones
        ]
        window = request.key_window
        try:
            return self.audit.command(
                key=request.key,
                reuse_before=None if window is None else self.clock_wall() - window,
                chat=request.user.chat,
                sender_id=request.user.id,
                person=job.person.name if job.person else None,
                place=request.place,
                targets=job.targets,
                text_chars=len(job.text),
                plan=plan,
                origin=job.origin,
                thread=request.thread,
            )
        except Taken:
            log.info("command %s was recorded by another replica: it answers", request.key)
            for counted in (self.sender_limit, self.phone_limit):  # its count, not ours
                counted.give_back(request.key or "")
            raise Elsewhere() from None
        except AuditError as exc:
            log.error("%s: nothing sent", exc)
            raise NotRecorded(
                Answer(
                    "not sent: deskbot cannot write its audit log, and sends nothing it "
                    "cannot record. An admin should check deskbot's log.",
                    error=True,
                    problem="unrecorded",
                )
            ) from None

    def _asks(self, job: Dispatch, command_id: int, phones: list[Phone]) -> dict[str, Ask | None]:
        """Each phone's confirm key, kept before any is sent (none unless ``job.confirm``)."""
        if not job.confirm or self.confirmer is None:
            return {}
        within = self.policy.message.confirm_within
        asks: dict[str, Ask | None] = {}
        request = job.request
        user = request.user
        follow = FollowUp(job.escalate_to, job.text if job.escalate_to else "",
                          user.id if user.chat == API else "", request.labels)  # fmt: skip
        try:
            where = Thread(user.chat, user.id, request.place, request.thread)
            self.confirmer.remember(command_id, where, within, follow)
        except AuditError as exc:
            log.error("%s: no phone gets a confirm key", exc)
            return {}
        for phone in phones:
            try:
                asks[phone.extension] = self.confirmer.ask(
                    command_id, phone, self.policy.desk_url, within
                )
            except AuditError as exc:
                log.error("%s: %s gets no confirm key", exc, phone.extension)
        return asks

    @staticmethod
    def _asked(job: Dispatch, phone: Phone, asks: dict[str, Ask | None]) -> str:
        if not job.confirm or phone.extension not in asks:
            return ""
        return "confirm asked" if asks[phone.extension] else why_not(phone.format, phone.site)

    def _answer(self, command_id: int, phone: Phone, delivery: Delivery) -> None:
        """One phone's answer: into the audit log and to the listeners (the live report)."""
        if self.audit:
            d = delivery
            answer = Recorded(phone.extension, d.uri, d.code, d.reason, d.elapsed_ms, d.cause.value)
            self.audit.delivery(command_id, answer)
            if self._flushing is None:  # answers of one moment share one transaction
                self._flushing = asyncio.get_running_loop().call_later(FLUSH_AFTER, self._flush)
        for listener in self.on_delivery:
            listener(command_id, phone, delivery)

    def _flush(self) -> None:
        self._flushing = None
        if self.audit:
            self.audit.flush()

    def answered(self, request: Request) -> None:
        """The command's answer reached the chat: a repeat of it is answered no more."""
        if request.key and self.audit:
            self.audit.answered(request.key)
        self.release(request)

    def still_ours(self, accepted: Accepted) -> bool:
        """After the phones answered, the reply claimed: False if another replica took the
        command over while this one was stalled past its hold (that one answers; this one
        must not). From True on, no replica takes it over, also one catching up on the chat."""
        if not accepted.command_id or self.audit is None or not accepted.job.request.key:
            return True
        if self.audit.replying(accepted.command_id):
            return True
        log.warning("command %s was taken over by another replica: not answered here",
                    accepted.job.request.key)  # fmt: skip
        return False

    def answering(self, request: Request) -> bool:
        """An answer that sent nothing (``who``, ``help``, a refusal) is claimed before it is
        posted: of two replicas reading the same command, one answers it."""
        if not request.key or not self.audit:
            return True
        return self.audit.answering(request.key)

    def not_answered(self, request: Request) -> None:
        """The answer ``answering`` claimed could not be posted: a repeat answers it."""
        if request.key and self.audit and not request.answer_repeats:
            self.audit.answer_failed(request.key)

    def not_replied(self, request: Request) -> None:
        """Its reply was claimed but could not be posted (the chat went away): a repeat of
        the command, or another replica, answers it from the log."""
        if request.key and self.audit:
            for command_id in [i for i, k in self.held.items() if k == request.key]:
                self.audit.reply_failed(command_id)

    def let_go(self, accepted: Accepted) -> None:
        """A command answered when it was taken (a webhook's), now sent: nobody takes it over."""
        self.release(accepted.job.request)
        if self.audit and accepted.command_id:
            self.audit.let_go(accepted.command_id)

    def threaded(self, request: Request, thread: str) -> None:
        """The source answered the command in a thread it opened after the command was taken
        (a Slack slash command's anchor): the command's confirmations are posted there."""
        if self.confirmer is not None and request.key:
            for command_id in [i for i, k in self.held.items() if k == request.key]:
                self.confirmer.rethread(command_id, thread)

    def release(self, request: Request) -> None:
        """This replica no longer works on the command: its hold is left to expire."""
        if request.key and self.held:
            for command_id in [i for i, k in self.held.items() if k == request.key]:
                del self.held[command_id]

    # -- answers that send nothing ---------------------------------------------------
    def who(self, target: str, show_uris: bool) -> Answer:
        """Where a target goes; phone addresses only for admins (they are network details)."""
        try:
            resolution = self.directory.resolve(target)
        except TargetError as exc:
            return Answer(str(exc), error=True)
        return Answer(report.who_text(target, resolution.phones, show_uris))

    def history(self, user: ChatUser, person: Person | None, everyone: bool, admin: bool) -> Answer:
        if self.audit is None:
            return Answer("history is not kept: no [audit] path is configured", error=True)
        if everyone and not admin:
            return Answer(
                "only admins may see everyone's history; `history` shows yours", error=True
            )
        entries = self.audit.history(
            chat=None if everyone else user.chat,
            sender_id=None if everyone else user.id,
            person=None if everyone or person is None else person.name,
        )
        return Answer(report.history_text(entries, everyone))
