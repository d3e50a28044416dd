"""A sender that records what it was asked and answers from a table (httpx's MockTransport twin).

For policy tests and anything else that must not start pjsua2: each phone
answers ``answers[extension]`` (a SIP code, or a ``Delivery`` factory), else
200 OK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from deskbot.directory.snapshot import Phone
from deskbot.senders.base import Ask, Delivery, Health

REASONS = {200: "OK", 404: "Not Found", 408: "Request Timeout", 486: "Busy Here"}


@dataclass
class RecordingSender:
    answers: Mapping[str, int | Callable[[Phone, str], Delivery]] = field(default_factory=dict)
    max_body_bytes: int = 1200
    timeout: float = 1.0
    sent: list[tuple[Phone, str]] = field(default_factory=list)
    probed: list[Phone] = field(default_factory=list)
    asks: dict[str, Ask] = field(default_factory=dict)  # extension -> the last confirm asked
    started: bool = False
    gate: asyncio.Event | None = None  # set: phones answer only once the gate opens

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    def health(self) -> Health:
        return Health(alive=True)

    async def send(self, phone: Phone, text: str, ask: Ask | None = None) -> Delivery:
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append((phone, text))
        if ask is not None:
            self.asks[phone.extension] = ask
        await asyncio.sleep(0)  # a real sender yields too: other commands may run meanwhile
        answer = self.answers.get(phone.extension, 200)
        if callable(answer):
            return answer(phone, text)
        return Delivery(phone.uri, answer, REASONS.get(answer, "Answer"), 1.0)

    async def probe(self, phone: Phone) -> Delivery:
        self.probed.append(phone)
        await asyncio.sleep(0)
        answer = self.answers.get(phone.extension, 200)
        if callable(answer):
            return answer(phone, "")
        return Delivery(phone.uri, answer, REASONS.get(answer, "Answer"), 1.0)

    def texts(self, extension: str) -> list[str]:
        """What one phone was sent, in order."""
        return [text for phone, text in self.sent if phone.extension == extension]
