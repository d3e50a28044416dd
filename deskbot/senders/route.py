"""A sender that routes each phone by its ``site``: "" to the local sender, else to the sites'.

The relay keeps talking to one ``Sender``; where a phone's office is stays here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from deskbot.directory.snapshot import Phone
from deskbot.senders.base import Delivery, Health, Routing, Sender
from deskbot.settings.schema import Settings


@runtime_checkable
class SiteEdges(Protocol):
    """The sites' sender as far as the front's watch of its edges needs it."""

    async def edge_online(self, site: str) -> bool: ...


class RouteSender(Routing):
    def __init__(self, local: Sender, sites: Sender):
        self.local = local
        self.sites = sites

    @property
    def max_body_bytes(self) -> int:
        return min(self.local.max_body_bytes, self.sites.max_body_bytes)

    @property
    def timeout(self) -> float:
        return max(self.local.timeout, self.sites.timeout)

    async def start(self) -> None:
        await self.local.start()
        await self.sites.start()

    async def close(self) -> None:
        await asyncio.gather(self.local.close(), self.sites.close())

    def health(self) -> Health:
        """Alive with the local sender: a restart of the front does not bring NATS back."""
        local, sites = self.local.health(), self.sites.health()
        return Health(
            local.alive,
            {**local.details, **sites.details},
            local.in_flight + sites.in_flight,
            local.restarts,
        )

    def pick(self, phone: Phone) -> Sender:
        """The sites' sender for a phone with a ``site``, else the local one."""
        return self.sites if phone.site else self.local

    async def probe(self, phone: Phone) -> Delivery:
        return await self.pick(phone).probe(phone)

    async def edge_online(self, site: str) -> bool:
        sites = self.sites
        return isinstance(sites, SiteEdges) and await sites.edge_online(site)


def for_settings(settings: Settings, secret: Callable[[str], str], local: Sender) -> Sender:
    """The front's sender: ``local`` alone, or routed by site when ``[nats]`` is configured."""
    if settings.nats is None:
        return local
    from deskbot.senders.sites.sender import EdgeSender  # nats-py loads only where it is used

    return RouteSender(local, EdgeSender(settings.nats, secret, settings.sip.timeout))
