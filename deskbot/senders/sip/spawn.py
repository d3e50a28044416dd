"""Starting the SIP worker process: apart from the agent, so a one-shot command can start
it before importing anything heavy (the worker's start-up then overlaps the parent's)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from deskbot.senders.sip.early import WORKER_ARGV as WORKER_COMMAND


class WorkerProcess(Protocol):
    """What the agent uses of a worker process (asyncio's, or one `deskbot.launch` adopted)."""

    stdin: asyncio.StreamWriter | None
    stdout: asyncio.StreamReader | None
    stderr: asyncio.StreamReader | None

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


async def spawn_worker(command: Sequence[str] = WORKER_COMMAND) -> asyncio.subprocess.Process:
    """A worker process that imports pjsua2 while it waits for its start settings."""
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
