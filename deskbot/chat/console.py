"""Console chat: one line in, the same replies as Slack or Matrix out.

Reads commands from stdin (a TTY or a pipe, so the demo can be scripted).
A leading ``/deskphone`` or ``!deskphone`` is accepted and ignored.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from deskbot import report
from deskbot.relay import Answer, ChatUser, Relay

PREFIXES = ("/deskphone", "!deskphone")


class ConsoleAdapter:
    name = "console"

    def __init__(
        self, relay: Relay, user: ChatUser, out: TextIO = sys.stdout, prompt: bool | None = None
    ):
        self.relay = relay
        self.user = user
        self.out = out
        self.prompt = sys.stdin.isatty() if prompt is None else prompt
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        self._connected = True

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def handle_line(self, line: str) -> None:
        text = line.strip()
        for prefix in PREFIXES:
            if text.lower().startswith(prefix):
                text = text[len(prefix) :].strip()
        if not text or text.startswith("#"):
            return
        prepared = self.relay.prepare(self.user, text, place="console")
        if isinstance(prepared, Answer):
            self.say(("⚠️ " if prepared.error else "") + prepared.text)
            return
        self.say(f"… {prepared.title}")
        result = await self.relay.deliver(prepared)
        self.say(report.plain(result))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.prompt:
                self.out.write(f"{self.user.id}> ")
                self.out.flush()
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            await self.handle_line(line)
        self._connected = False

    async def stop(self) -> None:
        self._connected = False

    async def notify_admins(self, text: str) -> None:
        self.say(text)
