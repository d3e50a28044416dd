"""Chat adapters: translate platform events to relay calls and reports to messages.

An adapter does no directory lookup, no SIP and no policy: it hands
``(ChatUser, text, place)`` to the relay and words what comes back.
"""

from __future__ import annotations

from typing import Protocol


class Adapter(Protocol):
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
