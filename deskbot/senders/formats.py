"""A sender that routes each phone by its ``format``: SIP formats to one sender, HTTP to another.

The relay keeps talking to one ``Sender``; which phones take HTTP push stays
here (as ``route.RouteSender`` keeps where a phone's office is). Probes are
SIP OPTIONS for every phone: a phone with an HTTP format still has a SIP URI.
"""

from __future__ import annotations

import asyncio

from deskbot.directory.snapshot import HTTP_FORMATS, Phone
from deskbot.senders.base import Delivery, Health, Routing, Sender


class FormatSender(Routing):
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

    def pick(self, phone: Phone) -> Sender:
        """HTTP push for a phone of this office with an HTTP format, else SIP."""
        return self.http if phone.format in HTTP_FORMATS and not phone.site else self.sip

    async def probe(self, phone: Phone) -> Delivery:
        return await self.sip.probe(phone)
