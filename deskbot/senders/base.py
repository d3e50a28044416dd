"""Ways out: what a phone answered, and the one interface deskbot sends through.

The relay asks a ``Sender`` to deliver a text to a ``Phone`` and gets a
``Delivery`` back; it never learns how (a SIP MESSAGE or a Snom Infobox
NOTIFY, by the phone's ``format``; an OPTIONS for a probe; a router by site
can sit behind the same protocol, as httpx picks a transport per URL). A
``Delivery`` says why it ended in a ``Cause``, so wording a failure never
depends on a sender's error strings.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

from deskbot.directory.snapshot import MESSAGE, Phone

# The title of the screens of one fan-out (who sends; "" shows "deskbot"), set by the relay
# beside fair.COMMAND: every send task of one ``gather`` inherits it.
TITLE: contextvars.ContextVar[str] = contextvars.ContextVar("deskbot_title", default="")


def wire_bytes(format: str, text: str, title: str = "", ask: Ask | None = None) -> int:
    """The bytes ``text`` takes as a request body in a phone ``format``: as it is for a
    MESSAGE; for a maker's screen, the XML around it, titled, every ``&`` or ``<`` escaped,
    with the key ``ask`` puts on it."""
    if format == MESSAGE:
        return len(text.encode())
    from deskbot.senders.screens import catalog
    from deskbot.senders.screens.xmltext import SoftKey

    keys = (SoftKey(ask.label, ask.url),) if ask else ()
    return catalog.size(format, text, title, keys)


def body_limit(format: str, sip_bytes: int) -> int:
    """The largest body a phone ``format`` takes, where one SIP message takes ``sip_bytes``."""
    from deskbot.senders.screens import catalog

    return catalog.limit(format, sip_bytes)


def maker_of(format: str) -> str:
    """Whose screen a phone ``format`` is ("Yealink"), for answers; "" for a plain MESSAGE."""
    from deskbot.senders.screens import catalog

    return catalog.spec(format).maker


def can_confirm(format: str) -> bool:
    """Whether a phone ``format``'s screen carries a key (an ``Ask``); a MESSAGE has none."""
    from deskbot.senders.screens import catalog

    return catalog.spec(format).keys


@dataclass(frozen=True, slots=True)
class Ask:
    """A confirmation asked of one phone: its screen carries a key that makes it GET ``url``."""

    url: str  # on [desk] url, with the unguessable token of this command and phone
    label: str = "OK"


class SenderError(RuntimeError):
    """A sender could not start; the message says why and what to check."""


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"  # the phone answered 2xx
    REFUSED = "refused"  # the phone (or PBX) answered a final non-2xx code
    NO_ANSWER = "no-answer"  # timeout, unreachable, transport error
    UNCONFIRMED = "unconfirmed"  # the sender died while the message was out


class Cause(enum.StrEnum):
    """Why a delivery ended the way it did."""

    ANSWERED = "answered"  # the phone (or its PBX) sent this final answer
    TIMEOUT = "timeout"  # no answer in time
    TRANSPORT = "transport"  # no connection: refused, unreachable, network error
    TOO_LONG = "too-long"  # the body does not fit one message
    TOO_MANY = "too-many"  # the sender has too many connections or messages open
    AGENT_DOWN = "agent-down"  # the sender gave up and cannot send at all
    UNCONFIRMED = "unconfirmed"  # the sender restarted or stopped while the message was out
    SITE_DOWN = "site-down"  # no edge of the phone's site took it (or NATS is away): not sent
    PHONE_ERROR = "phone-error"  # the phone answered 2xx with an error in its body (Cisco)


@dataclass(frozen=True, slots=True)
class Delivery:
    uri: str
    code: int  # the SIP code; 0 when nobody can say what the phone got
    reason: str
    elapsed_ms: float
    cause: Cause = Cause.ANSWERED

    @property
    def local(self) -> bool:
        """The answer was made by our own sender, not by the phone."""
        return self.cause not in (Cause.ANSWERED, Cause.PHONE_ERROR)

    @property
    def outcome(self) -> Outcome:
        if self.cause is Cause.UNCONFIRMED:
            return Outcome.UNCONFIRMED
        if self.cause is Cause.PHONE_ERROR:
            return Outcome.REFUSED
        if self.cause is Cause.ANSWERED and 200 <= self.code < 300:
            return Outcome.DELIVERED
        if self.cause is not Cause.ANSWERED or self.code == 408:
            return Outcome.NO_ANSWER
        return Outcome.REFUSED


@dataclass(frozen=True, slots=True)
class Health:
    """What /healthz shows of a sender."""

    alive: bool
    details: dict[str, Any] = field(default_factory=dict)  # shown as is under "sip"
    in_flight: int = 0
    restarts: int = 0


class Sender(Protocol):
    """Delivers one text to one phone; ``send`` never raises for delivery failures."""

    @property
    def max_body_bytes(self) -> int:
        """The largest body (UTF-8 bytes) one message takes."""

    @property
    def timeout(self) -> float:
        """Seconds after which a send has its answer at the latest."""

    async def start(self) -> None:
        """Get ready to send; raise with a clear message if that is impossible."""

    async def close(self) -> None:
        """Finish or report what is in flight, then release everything."""

    def health(self) -> Health: ...

    async def send(self, phone: Phone, text: str, ask: Ask | None = None) -> Delivery:
        """Show `text` on the phone, in the phone's ``format``; with ``ask``, with its key
        (a format without keys shows the text alone: the relay reports that)."""

    async def probe(self, phone: Phone) -> Delivery:
        """Ask whether the phone answers at all; nothing is displayed."""


@runtime_checkable
class SendsAll(Protocol):
    """A sender that also takes a whole fan-out in one call (the SIP agent): no task per phone.

    Optional: the relay uses it when its sender has it, and ``send`` per phone otherwise.
    """

    async def send_all(
        self,
        items: Sequence[tuple[Phone, str, Ask | None]],
        on_answer: Callable[[int, Delivery], None],
    ) -> list[Delivery]:
        """``send`` for each (phone, text, ask); ``on_answer(index, delivery)`` once per answer
        as it comes; all answers, in the order of ``items``, once all are in."""


async def send_all(
    sender: Sender,
    items: Sequence[tuple[Phone, str, Ask | None]],
    on_answer: Callable[[int, Delivery], None],
) -> list[Delivery]:
    """Every (phone, text, ask) of one fan-out through ``sender``: its ``send_all`` if it has
    one, else a ``send`` task per phone; ``on_answer(index, delivery)`` once per answer."""
    if isinstance(sender, SendsAll):
        return await sender.send_all(items, on_answer)

    async def one(index: int, phone: Phone, text: str, ask: Ask | None) -> Delivery:
        delivery = await sender.send(phone, text, ask)
        on_answer(index, delivery)
        return delivery

    return list(await asyncio.gather(*(one(i, *item) for i, item in enumerate(items))))


class Routing:
    """A sender that hands each phone to one of its own senders (by format, by site): a
    ``send`` goes to the one ``pick`` names; a fan-out is split by it, each part through
    that sender's own ``send_all``, all parts at once."""

    def pick(self, phone: Phone) -> Sender:
        raise NotImplementedError

    async def send(self, phone: Phone, text: str, ask: Ask | None = None) -> Delivery:
        return await self.pick(phone).send(phone, text, ask)

    async def send_all(
        self,
        items: Sequence[tuple[Phone, str, Ask | None]],
        on_answer: Callable[[int, Delivery], None],
    ) -> list[Delivery]:
        """Answers keep the indexes and order of ``items``."""
        parts: dict[int, tuple[Sender, list[int]]] = {}
        for index, (phone, _, _) in enumerate(items):
            sender = self.pick(phone)
            parts.setdefault(id(sender), (sender, []))[1].append(index)
        if len(parts) == 1:
            ((sender, _),) = parts.values()
            return await send_all(sender, items, on_answer)

        async def part(sender: Sender, indexes: list[int]) -> list[Delivery]:
            return await send_all(
                sender, [items[i] for i in indexes], lambda j, d: on_answer(indexes[j], d)
            )

        ordered = list(parts.values())
        answers = await asyncio.gather(*(part(sender, indexes) for sender, indexes in ordered))
        results: list[Delivery | None] = [None] * len(items)
        for (_, indexes), deliveries in zip(ordered, answers, strict=True):
            for index, delivery in zip(indexes, deliveries, strict=True):
                results[index] = delivery
        return cast(list[Delivery], results)  # the parts' indexes cover every item once
