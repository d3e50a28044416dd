"""What the store keeps and gives back, and the interface a backend implements.

The relay, the sources and the directory sync use ``CommandLog`` and
``LaterSends``; SQLite (``audit``, ``deferred``) is the backend today. A
second one (PostgreSQL) implements the same two protocols with the same
values, and nothing above the store changes; ``Confirmations`` likewise
(``confirms`` on SQLite, ``pgconfirms`` on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class AuditError(Exception):
    """The audit log cannot be written; the message says why."""


class Taken(AuditError):
    """Another process recorded a command with this key first: it does the work."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    ts: float
    who: str
    targets: str
    text_chars: int
    phones: int
    delivered: int
    answers: str  # "200 OK, 404 Not Found"
    command_id: int = 0


@dataclass(frozen=True, slots=True)
class Planned:
    """A phone a command goes to, as recorded before sending."""

    extension: str
    uri: str
    label: str
    skipped: str  # why it is not sent (rate limit); "" when it is


@dataclass(frozen=True, slots=True)
class Answer:
    extension: str
    uri: str
    code: int
    reason: str
    elapsed_ms: float
    cause: str = "answered"


@dataclass(frozen=True, slots=True)
class Seen:
    """What the log knows of a command key that came in before."""

    answered: bool  # its reply reached the chat
    command_id: int | None  # None: it sent nothing (help, a refusal)
    plan: tuple[Planned, ...] = ()
    answers: tuple[Answer, ...] = ()
    owner: str = ""  # the replica sending it ("" from before replicas)
    lease_until: float = 0.0  # epoch seconds the owner holds it until, unless renewed
    epoch: int = 0  # how often it was taken over; a claim names the epoch it saw


@dataclass(frozen=True, slots=True)
class Orphan:
    """A command whose owner stopped renewing its hold before its reply reached the chat."""

    command_id: int
    key: str
    chat: str
    sender_id: str
    place: str
    thread: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Commanded:
    """One recorded command by its id: who gave it, its phones and their answers so far."""

    id: int
    chat: str
    sender_id: str
    plan: tuple[Planned, ...]
    answers: tuple[Answer, ...]


@dataclass(frozen=True, slots=True)
class Deferred:
    id: int
    due: float  # epoch seconds
    zone: str  # the time zone it was planned in ("" the host's), for showing its time
    chat: str
    sender_id: str
    display_name: str
    person: str | None
    place: str
    thread: str  # the source's reference to the command's thread
    command: str  # the send, as typed after `in 20s` / `at 14:55`

    @property
    def key(self) -> str:
        return f"deferred:{self.id}"

    def row(self, key: str, created: float) -> tuple[object, ...]:
        """The values of a new row (``rows.INSERT_DEFERRED``): its id is the store's."""
        return (
            key or None, created, self.due, self.zone, self.chat, self.sender_id,
            self.display_name, self.person, self.place, self.thread, self.command,
        )  # fmt: skip

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Deferred:
        """A planned send from a row of ``rows.DEFERRED_COLUMNS``."""
        return cls(int(row[0]), float(row[1]), *(row[i] for i in range(2, 10)))


@dataclass(frozen=True, slots=True)
class Confirmation:
    """One phone's confirmation request of a command, as kept."""

    command_id: int
    extension: str
    format: str
    state: str  # "waiting", "confirmed" or "unsupported" (its format has no keys)
    confirmed_at: float | None  # epoch seconds of the press
    expires: float  # epoch seconds after which its token confirms nothing


@dataclass(frozen=True, slots=True)
class Thread:
    """Where a command was given, so that its confirmations are posted there."""

    chat: str
    sender_id: str
    place: str
    thread: str  # the source's reference to the command's thread ("" the place itself)


@dataclass(frozen=True, slots=True)
class FollowUp:
    """What a confirm command asks beyond its thread, kept with it: who is told the phones
    that did not confirm (with the text, erased once told), and the alert a press silences
    (the API client whose Alertmanager it is, and the alert's labels)."""

    escalate_to: str = ""  # targets; "": nobody
    text: str = ""
    client: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    due: float = 0.0  # read back: when confirm_within passes (``remember`` takes it apart)


NO_FOLLOW_UP = FollowUp()


class Confirmations(Protocol):
    """Confirmation requests: tokens (kept hashed), presses, and which reached the thread."""

    def remember(
        self, command_id: int, where: Thread, due: float, follow: FollowUp = NO_FOLLOW_UP
    ) -> None: ...

    def follow_up(self, command_id: int) -> FollowUp | None: ...

    def overdue(self, now: float) -> list[int]: ...

    def summarized(self, command_id: int) -> None: ...

    def where(self, command_id: int) -> Thread | None: ...

    def ask(
        self,
        command_id: int,
        extension: str,
        format: str,
        token: str | None,
        host: str,
        expires: float,
    ) -> None: ...

    def press(self, token: str, host: str, now: float) -> tuple[Confirmation, bool] | None: ...

    def of(self, command_id: int) -> list[Confirmation]: ...

    def unposted(self) -> list[Confirmation]: ...

    def posted(self, command_id: int, extension: str) -> None: ...

    def rethread(self, command_id: int, thread: str) -> None: ...


class SignIns(Protocol):
    """The web console's sign-in attempts (never a password)."""

    def record(self, name: str, address: str, outcome: str) -> None: ...

    def recent(self, limit: int = 50) -> list[tuple[float, str, str, str]]: ...


class LaterSends(Protocol):
    """Deferred sends (`in 20s ...`, `at 14:55 ...`) and the schedules' marks."""

    def mark(self, name: str, value: float) -> None: ...

    def marked(self, name: str) -> float | None: ...

    def add(self, key: str, plan: Deferred) -> int: ...

    def get(self, deferred_id: int) -> Deferred | None: ...

    def due(self, now: float) -> list[Deferred]: ...

    def pending(
        self, chat: str | None, sender_id: str | None, person: str | None
    ) -> list[Deferred]: ...

    def close(self, deferred_id: int, state: str) -> bool: ...


class CommandLog(Protocol):
    """Commands, each phone's answer, idempotency keys, and the LDAP directory's last result."""

    path: str  # where it is, for messages (a file, or a postgresql:// URL)
    replica: str  # this process, as the owner of the commands it records
    shared: bool  # replicas share it (PostgreSQL): rate windows are counted here
    # each transaction's seconds and whether it was written (/metrics)
    on_write: list[Callable[[float, bool], None]]

    def take_slots(
        self, keys: list[str], limit: int, window: float, tag: str = ""
    ) -> dict[str, float]:
        """A rate slot for each key with fewer than ``limit`` in the last ``window`` seconds
        (taken: 0), else the seconds until one is free; one transaction for all the keys.
        ``tag``: the command they are for, to give them back if another replica sends it."""
        ...

    def give_back(self, tag: str) -> None:
        """The slots this replica took with ``tag``: the command was another replica's."""
        ...

    def slot_wait(self, key: str, limit: int, window: float) -> float:
        """A look without taking: the seconds until ``key`` has a free slot (0: it has one)."""
        ...

    def command(
        self,
        *,
        key: str | None,
        chat: str,
        sender_id: str,
        person: str | None,
        place: str,
        targets: str,
        text_chars: int,
        plan: list[Planned],
        reuse_before: float | None = None,
        origin: str = "",
        thread: str = "",
    ) -> int: ...

    def claim(self, command_id: int, epoch: int) -> bool:
        """Become the command's owner, if it is still at ``epoch`` and its hold expired
        (or this replica, restarted, held it), and claim its reply (see ``replying``):
        True once, for one replica, which answers it from the log."""
        ...

    def replying(self, command_id: int) -> bool:
        """Claim the command's reply before posting it: True once, for its owner, and no
        other replica takes the command over from then on (False: another took it)."""
        ...

    def reply_failed(self, command_id: int) -> None:
        """The claimed reply could not be posted: a repeat or a take-over answers it."""
        ...

    def let_go(self, command_id: int) -> None:
        """Nobody answers this command later (a webhook's, once sent): no take-over for it."""
        ...

    def hold(self, command_ids: list[int]) -> None:
        """Renew this replica's hold on the commands it is still working on."""
        ...

    def orphans(self, limit: int = 100) -> list[Orphan]:
        """Unanswered commands of the last hour whose hold expired, oldest first."""
        ...

    def leads(self) -> bool:
        """Whether this replica fires the clocks (later sends, schedules); re-checked often."""
        ...

    def delivery(self, command_id: int, answer: Answer) -> None: ...

    def flush(self) -> None: ...

    def finish(self, command_id: int) -> None: ...

    def answered(self, key: str) -> None: ...

    def answering(self, key: str) -> bool:
        """Mark the key answered before its answer is posted: True for one caller only."""
        ...

    def answer_failed(self, key: str) -> None:
        """The answer claimed by ``answering`` could not be posted: a repeat answers it."""
        ...

    def seen(self, key: str, within: float | None = None) -> Seen | None: ...

    def commanded(self, command_id: int) -> Commanded | None: ...

    def history(
        self, *, chat: str | None, sender_id: str | None, person: str | None, limit: int = 10
    ) -> list[HistoryEntry]: ...

    def cache_directory(self, source: str, ts: float, data: str) -> None: ...

    def cached_directory(self, source: str) -> tuple[float, str] | None: ...

    def deferred_sends(self) -> LaterSends: ...

    def sign_ins(self) -> SignIns: ...

    def confirmations(self) -> Confirmations | None:
        """The confirm tokens and presses; None where the backend keeps none yet."""
        ...

    def close(self) -> None: ...
