"""What sources and the relay exchange: a Request in; an Answer, a Dispatch or a Replay out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from deskbot.directory.snapshot import Person, Phone
from deskbot.relay import grammar, report
from deskbot.settings.schema import Access, Limits, Message, Schedule, Settings, Template

SHELL = "shell"  # the operator at the shell: trusted like an admin
API = "api"  # a client of the HTTP API, known by its token: may send, within its targets
SCHEDULE = "schedule"  # a [schedules] entry, set up by the operator: may send while configured


@dataclass(frozen=True, slots=True)
class ChatUser:
    chat: str  # the source: "slack", "matrix", "console" or "shell"
    id: str  # the platform's user id
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class Request:
    """One command as it came in: who, what, where, and its durable id at the source."""

    user: ChatUser
    text: str
    place: str = ""  # room or channel id
    key: str = ""  # the source's own durable id of the command (Matrix event id, ...)
    sent_at: float | None = None  # when the source says it was sent (epoch seconds)
    # Set by sources that take targets and text apart (the API): the text is then the
    # message itself, never read as a command.
    targets: str | None = None
    # Seconds the key keeps a repeat out; None: for ever. Alert webhooks re-send the same
    # content on purpose later (Alertmanager's repeat_interval), so their keys expire.
    key_window: float | None = None
    # The source's reference to the command's thread, kept with a deferred send so the
    # source can answer there later (``Replies.replier_for``).
    thread: str = ""
    # The sender's IANA time zone where the platform gives one (Slack's users.info
    # `tz`): how `at 14:55` is read; "" = [message] timezone, else the host's.
    timezone: str = ""
    # An HTTP client retries because it lost the response: a repeat of a send is
    # answered again from the log (never sent again), and a refusal is not kept.
    answer_repeats: bool = False
    # Set by sources that take the fields apart (the API's "confirm": true)
    confirm: bool = False
    # Who is told the phones that did not confirm within confirm_within (the API's
    # "escalate_to", a schedule's); and the alert a press silences (its labels)
    escalate_to: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply that sends nothing. ``error``: the command was refused or malformed.

    ``problem`` names the refusal for machines (the API's status codes): "unknown-target",
    "too-long", "empty-text", "forbidden", "group-too-large", "rate-limited" (with
    ``retry_after`` seconds), "stale", "not-allowed", "usage", "unrecorded".
    """

    text: str
    error: bool = False
    problem: str = ""
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class Replay:
    """A command that came in before (same key): nothing is sent again.

    ``report``: what to answer, rebuilt from the audit log; None when its
    answer already reached the chat.
    """

    report: report.Report | None


class Elsewhere(Exception):
    """Another replica recorded this command first: it sends and answers; this one is silent."""


class NotRecorded(Exception):
    """The audit log cannot take the command: nothing is sent; ``answer`` says so."""

    def __init__(self, answer: Answer):
        super().__init__(answer.text)
        self.answer = answer


@dataclass(frozen=True, slots=True)
class Policy:
    message: Message
    access: Access
    limits: Limits
    # API client -> the targets it may reach (clients without a list reach any)
    scopes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    clients: frozenset[str] = frozenset()  # API clients in the config now (a reload revokes)
    templates: Mapping[str, Template] = field(default_factory=dict)
    schedules: Mapping[str, Schedule] = field(default_factory=dict)
    desk_url: str = ""  # [desk] url: where a phone's confirm key points; "": no confirmations

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        clients = settings.api.clients if settings.api else {}
        scopes = {name: tuple(c.targets) for name, c in clients.items() if c.targets is not None}
        return cls(
            settings.message,
            settings.access,
            settings.limits,
            scopes,
            frozenset(clients),
            settings.templates,
            settings.schedules,
            (settings.desk.url or "") if settings.desk else "",
        )


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A send that passed every check; ``deliver`` carries it out."""

    request: Request
    person: Person | None
    admin: bool
    targets: str
    text: str  # as typed (cleaned)
    body: str  # what the phone shows
    phones: tuple[Phone, ...]
    groups: tuple[str, ...]
    probe: bool = False  # ask each phone whether it answers (SIP OPTIONS); no text
    origin: str = ""  # "template:firedrill", "schedule:standup": recorded in the audit log
    confirm: bool = False  # each phone is asked for a confirmation (a key labelled OK)
    escalate_to: str = ""  # told who did not confirm within confirm_within ("": nobody)

    @property
    def user(self) -> ChatUser:
        return self.request.user

    @property
    def sender_name(self) -> str:
        """The title of the screens this send shows: who sends, "" (deskbot) from the shell."""
        user = self.user
        if user.chat == SHELL:
            return ""
        who = self.person.display if self.person else grammar.one_line(user.display_name)
        return grammar.one_line(who) or grammar.one_line(user.id)

    @property
    def title(self) -> str:
        user = self.user
        who = self.person.display if self.person else grammar.one_line(user.display_name)
        names = ", ".join(p.title for p in self.phones)
        if self.probe:
            return f"{who or user.id} probes {names}"
        return f"{who or user.id} → {names}: {self.text}"


@dataclass(frozen=True, slots=True)
class Accepted:
    """A job whose command is recorded: nothing stops it now but a crash."""

    job: Dispatch
    command_id: int
    skipped: dict[str, str]  # extension -> why that phone is not sent (rate limit)
    started: float  # perf_counter at acceptance, for the log line
