"""Ways in: chat adapters, the HTTP API and alert webhooks, feeding the one relay.

A source only translates: its platform's event becomes a ``Request``, and
``serve`` runs that request through the relay and answers it through the
source's ``Replier`` (an answer, a "waiting" signal, a report). A source
that answers once a send is recorded, before the phones answer (alert
webhooks), uses ``take`` instead and sends with ``relay.fan_out``. A source
does no directory lookup, no SIP and no policy; what it must know of the
policy it asks the relay (``admin_ids``, ``allows``, ``patience``).
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from deskbot import failpoints
from deskbot.relay import (
    Accepted,
    Answer,
    ChatUser,
    Dispatch,
    NotRecorded,
    Relay,
    Replay,
    Request,
)
from deskbot.report import Report

__all__ = [
    "Accepted",
    "Answer",
    "ChatUser",
    "Dispatch",
    "Relay",
    "Replay",
    "Replier",
    "Replies",
    "Request",
    "Source",
    "carry_out",
    "serve",
    "take",
]


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


async def serve(relay: Relay, request: Request, replier: Replier) -> Answer | Report | None:
    """Run one command through the relay and answer it: the one path for every source.

    Answered exactly once: a command that comes in again (same key) is not sent
    again, and is answered only if its answer never reached the chat. None: it
    was answered before.
    """
    prepared = relay.prepare(request)
    if isinstance(prepared, Replay):
        if prepared.report is None:
            return None
        await replier.report(prepared.report)
        relay.answered(request)
        return prepared.report
    if isinstance(prepared, Answer):
        await replier.answer(prepared)
        if not request.answer_repeats:  # a client that retries a refusal is checked afresh
            relay.answered(request)
        return prepared
    return await carry_out(relay, prepared, replier)


async def carry_out(relay: Relay, job: Dispatch, replier: Replier) -> Report | Answer:
    """Send a prepared job; the replier's waiting signal never holds up the phones.

    The command is recorded before the first await, so a repeat of it that arrives
    while its phones are asked finds its key and is not sent again.
    """
    try:
        accepted = relay.accept(job)
    except NotRecorded as refused:
        await replier.answer(refused.answer)
        return refused.answer
    delivery = asyncio.ensure_future(relay.fan_out(accepted))
    try:
        after = replier.waiting_after
        if after is not None:
            if after > 0:
                await asyncio.wait({delivery}, timeout=after)
            if not delivery.done():
                await replier.waiting(job)
        result = await delivery
    except asyncio.CancelledError:
        delivery.cancel()
        raise
    except BaseException:
        await asyncio.gather(delivery, return_exceptions=True)  # the phones still get the text
        raise
    await replier.report(result)
    failpoints.reached("after-reply")
    relay.answered(job.request)
    failpoints.reached("after-answered")
    return result


def take(relay: Relay, request: Request) -> Answer | Replay | Accepted:
    """Check and durably record a send without waiting for the phones.

    Synchronous on purpose: nothing else runs between the key check and the
    record, so two copies of a notification arriving together cannot both pass.
    An ``Accepted`` still has to be sent: ``await relay.fan_out(accepted)``.
    """
    prepared = relay.prepare(request)
    if not isinstance(prepared, Dispatch):
        return prepared
    try:
        return relay.accept(prepared)
    except NotRecorded as refused:
        return refused.answer
