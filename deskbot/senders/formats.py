"""A sender that routes each phone by its ``format``: SIP formats to one sender, HTTP to another.

The relay keeps talking to one ``Sender``; which phones take HTTP push stays
here (as ``route.RouteSender`` keeps where a phone's office is). Probes are
SIP OPTIONS for every phone: a phone with an HTTP format still has a SIP URI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from deskbot.directory.snapshot import HTTP_FORMATS, Phone
from deskbot.senders.base import Ask, Delivery, Health, Sender, send_split


class FormatSender:
    def __init__(self, sip: Sender, http: Sender):
        self.sip = sip
        self.http = http

    @property
    def max_body_bytes(self) -> int:
        return self.sip.max_body_bytes  # one SIP message; HTTP formats have their maker's limit

    @property
    def timeout(self) -> float:
        return max(self.sip.timeout, self.http.timeout)

    async def start(self) -> None:
        await self.sip.start()
        await self.http.start()

    async def close(self) -> None:
        await asyncio.gather(self.sip.close(), self.http.close())

    def health(self) -> Health:
        sip, http = self.sip.health(), self.http.health()
        return Health(
            sip.alive, {**sip.details, **http.details}, sip.in_flight + http.in_flight, sip.restarts
        )

    def _of(self, phone: Phone) -> Sender:
        return self.http if phone.format in HTTP_FORMATS and not phone.site else self.sip

    async def send(self, phone: Phone, text: str, ask: Ask | None = None) -> Delivery:
        return await self._of(phone).send(phone, text, ask)

    async def send_all(
        self,
        items: Sequence[tuple[Phone, str, Ask | None]],
        on_answer: Callable[[int, Delivery], None],
    ) -> list[Delivery]:
        """SIP phones in one batch to the SIP sender, the HTTP ones to theirs."""
        return await send_split(items, on_answer, self._of)

    async def probe(self, phone: Phone) -> Delivery:
        return await self.sip.probe(phone)
