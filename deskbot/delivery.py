"""What a phone answered, and the one interface the rest of deskbot sends through."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"  # the phone answered 2xx
    REFUSED = "refused"  # the phone (or PBX) answered a final non-2xx code
    NO_ANSWER = "no-answer"  # timeout, unreachable, transport error
    UNCONFIRMED = "unconfirmed"  # the SIP agent died while the message was out


@dataclass(frozen=True, slots=True)
class Delivery:
    uri: str
    code: int
    reason: str
    elapsed_ms: float
    local: bool = False  # the answer was made by our own SIP stack, not by the phone

    @property
    def outcome(self) -> Outcome:
        if self.code == 0:
            return Outcome.UNCONFIRMED
        if 200 <= self.code < 300:
            return Outcome.DELIVERED
        if self.code == 408 or self.local:
            return Outcome.NO_ANSWER
        return Outcome.REFUSED


class Sender(Protocol):
    """Sends one SIP MESSAGE and returns the final answer; never raises for SIP failures."""

    async def send(self, uri: str, text: str) -> Delivery: ...
