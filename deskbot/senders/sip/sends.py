"""The sends of the SIP agent: one per phone, waiting for a slot and then for its answer.

A ``Send`` answers through its own future (``SipAgent.send``); a ``BatchSend`` through
the ``Batch`` of a whole fan-out (``SipAgent.send_all``): one future and one callback
per answer, no task per phone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from deskbot.directory.snapshot import HTTP_FORMATS, Phone
from deskbot.senders.base import TITLE, Ask, Cause, Delivery
from deskbot.senders.screens import catalog
from deskbot.senders.screens.xmltext import SoftKey
from deskbot.senders.sip import protocol

log = logging.getLogger("deskbot.sip")


class Agent(Protocol):
    def _out(self, send: Send) -> None: ...


def request_of(phone: Phone, text: str, ask: Ask | None) -> tuple[str, str, str] | Delivery:
    """What goes to the worker for a send to ``phone``: (uri, body, kind), or the answer."""
    if phone.format in HTTP_FORMATS:  # never a MESSAGE instead: no HTTP sender runs here
        why = f"{phone.format} is pushed over HTTP: deskbot started without [push]"
        return Delivery(phone.uri, 503, why, 0.0, Cause.TRANSPORT)
    if phone.format in protocol.NOTIFY_KINDS:  # a maker's screen by NOTIFY, titled
        keys = (SoftKey(ask.label, ask.url),) if ask else ()
        return phone.uri, catalog.spec(phone.format).build(text, TITLE.get(), keys), phone.format
    return phone.uri, text, protocol.MESSAGE


class Send:
    """One send waiting for its slot (see FairSlots.enqueue), then for its answer."""

    __slots__ = ("agent", "body", "future", "give_up", "id", "key", "kind", "queued", "started",
                 "uri")  # fmt: skip

    def __init__(
        self, agent: Agent, send_id: int, key: Any, uri: str, body: str, kind: str, at: float
    ):
        self.agent, self.id, self.key, self.uri, self.body, self.kind = (
            agent, send_id, key, uri, body, kind)  # fmt: skip
        self.started = at
        self.give_up = 0.0
        self.future: asyncio.Future[Delivery] | None = None
        self.queued = True

    def done(self) -> bool:  # gone (cancelled) while it waited for a slot or its answer
        return self.future is None or self.future.done()

    def set_result(self, _: None) -> None:  # its slot: off to the worker
        self.agent._out(self)

    def answer(self, delivery: Delivery) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(delivery)

    def waitable(self) -> asyncio.Future[Any]:
        assert self.future is not None
        return self.future


class Batch:
    """The answers of one ``send_all``: one future for them all, a callback for each."""

    __slots__ = ("cancelled", "future", "left", "on_answer", "results")

    def __init__(self, size: int, on_answer: Callable[[int, Delivery], None]):
        self.results: list[Delivery | None] = [None] * size
        self.left = size
        self.on_answer = on_answer
        self.cancelled = False
        self.future: asyncio.Future[list[Delivery]] = asyncio.get_running_loop().create_future()
        if not size:
            self.future.set_result([])

    def answer(self, index: int, delivery: Delivery) -> None:
        if self.cancelled or self.results[index] is not None:
            return
        self.results[index] = delivery
        self.left -= 1
        try:
            self.on_answer(index, delivery)
        except Exception as exc:  # as a failing task of a gather: the fan-out raises it
            if self.future.done():
                log.exception("recording an answer failed")
            else:
                self.future.set_exception(exc)
        if not self.left and not self.future.done():
            self.future.set_result(self.results)  # type: ignore[arg-type]  # all are in


class BatchSend(Send):
    """One phone of a ``send_all``: its answer goes to the batch, no future of its own."""

    __slots__ = ("batch", "index")

    def __init__(
        self, agent: Agent, send_id: int, key: Any, uri: str, body: str, kind: str, at: float,
        batch: Batch, index: int,
    ):  # fmt: skip
        super().__init__(agent, send_id, key, uri, body, kind, at)
        self.batch, self.index = batch, index

    def done(self) -> bool:
        return self.batch.cancelled

    def answer(self, delivery: Delivery) -> None:
        self.batch.answer(self.index, delivery)

    def waitable(self) -> asyncio.Future[Any]:
        return self.batch.future
