"""What a source is to the service, and how it answers one command where it was given."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from deskbot.relay.report import Report
    from deskbot.relay.values import Answer, ChatUser, Dispatch


class Source(Protocol):
    name: str  # "slack", "matrix", "console"

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None:
        """Connect; raise with a clear message if the credentials or server are wrong."""

    async def run(self) -> None:
        """Serve until cancelled; reconnect by itself when the service drops."""

    async def stop(self) -> None:
        """Stop taking commands; finish or report the sends already accepted."""

    async def notify_admins(self, text: str) -> None:
        """Tell the configured admins something they must act on (a broken config edit)."""


class Replier(Protocol):
    """How one command is answered where it was given."""

    @property
    def waiting_after(self) -> float | None:
        """Seconds of sending before ``waiting`` is called: 0 at once, None never."""

    async def answer(self, answer: Answer) -> None:
        """Nothing is sent: help, who, history or a refusal."""

    async def waiting(self, job: Dispatch) -> None:
        """The phones are being asked (an anchor message, an hourglass, a title line)."""

    async def report(self, result: Report) -> None:
        """Every phone has its answer (or, for a command replayed after a crash, what is known)."""


@runtime_checkable
class Replies(Protocol):
    """A chat source that can answer later where a command was given (a deferred send)."""

    name: str

    def replier_for(self, user: ChatUser, place: str, thread: str, key: str) -> Replier:
        """A replier for the thread a ``Request.thread`` named (``thread`` "": the place itself).

        ``key`` is the later send's own durable key, for the platform's duplicate check.
        """
        ...
