"""Console chat: one line in, the same replies as Slack or Matrix out.

Reads commands from stdin (a TTY or a pipe, so the demo can be scripted).
A leading ``/deskphone`` or ``!deskphone`` is accepted and ignored.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from deskbot.relay import report
from deskbot.relay.relay import Relay
from deskbot.relay.values import Answer, ChatUser, Dispatch, Request
from deskbot.sources.serve import serve

PREFIXES = ("/deskphone", "!deskphone")


class ConsoleReplier:
    waiting_after = 0.0

    def __init__(self, out: TextIO):
        self.out = out

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def answer(self, answer: Answer) -> None:
        self.say(report.answer_text(answer.text, answer.error))

    async def waiting(self, job: Dispatch) -> None:
        self.say(f"… {job.title}")

    async def report(self, result: report.Report) -> None:
        self.say(report.plain(result))


class ConsoleSource:
    name = "console"

    def __init__(
        self, relay: Relay, user: ChatUser, out: TextIO = sys.stdout, prompt: bool | None = None
    ):
        self.relay = relay
        self.user = user
        self.out = out
        self.replier = ConsoleReplier(out)
        self.prompt = sys.stdin.isatty() if prompt is None else prompt
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        self._connected = True

    async def handle_line(self, line: str) -> None:
        text = line.strip()
        for prefix in PREFIXES:
            if text.lower().startswith(prefix):
                text = text[len(prefix) :].strip()
        if not text or text.startswith("#"):
            return
        await serve(self.relay, Request(self.user, text, place="console"), self.replier)

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

    def replier_for(self, user: ChatUser, place: str, thread: str, key: str) -> ConsoleReplier:
        return self.replier

    async def notify_admins(self, text: str) -> None:
        self.replier.say(text)
