"""Starting the SIP worker process: apart from the agent, so a one-shot command can start
it before importing anything heavy (the worker's start-up then overlaps the parent's)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

WORKER_COMMAND = (sys.executable, "-m", "deskbot.senders.sip.worker")


async def spawn_worker(command: Sequence[str] = WORKER_COMMAND) -> asyncio.subprocess.Process:
    """A worker process that imports pjsua2 while it waits for its start settings."""
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
