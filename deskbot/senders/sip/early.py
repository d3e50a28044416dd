"""A one-shot command's SIP worker, started before anything heavy is imported.

`deskbot send` and `deskbot probe` spend most of their time starting two
interpreters: this one (asyncio, the relay, the config) and the SIP worker's
(pjsua2 and its endpoint). Started here, before this process imports anything
heavy, the worker's start-up runs beside the parent's instead of after half
of it. ``os.posix_spawn`` and three pipes need no import at all; once asyncio
runs, ``adopt`` turns them into the streams the SIP agent reads and writes.
Nothing is lost if the command turns out to send nothing: the worker exits
when its stdin closes (this process ending closes it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence

WORKER_ARGV = (sys.executable, "-m", "deskbot.senders.sip.worker")


class _Early:
    """A worker started before asyncio: its pid and our ends of its stdin, stdout, stderr."""

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int):
        self.pid, self.stdin, self.stdout, self.stderr = pid, stdin, stdout, stderr


_early: _Early | None = None


def start_worker(argv: Sequence[str] = WORKER_ARGV) -> None:
    """Spawn the SIP worker now; `adopt` hands it to asyncio later (no-op where unsupported)."""
    global _early
    if _early is not None or not hasattr(os, "pidfd_open"):
        return
    ends = [os.pipe(), os.pipe(), os.pipe()]  # (read, write): stdin, stdout, stderr
    child = (ends[0][0], ends[1][1], ends[2][1])
    try:
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(child)],
        )
    except OSError:
        for read, write in ends:
            os.close(read)
            os.close(write)
        return
    for fd in child:
        os.close(fd)
    _early = _Early(pid, ends[0][1], ends[1][0], ends[2][0])


async def adopt(limit: int = 1 << 22) -> AdoptedWorker | None:
    """The worker `start_worker` spawned, as asyncio streams; None if there is none."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        exited = os.pidfd_open(early.pid)
    except OSError:
        os.kill(early.pid, signal.SIGKILL)
        for fd in (early.stdin, early.stdout, early.stderr):
            os.close(fd)
        os.waitpid(early.pid, 0)
        return None
    readers = [asyncio.StreamReader(limit=limit), asyncio.StreamReader(limit=limit)]
    for fd, reader in zip((early.stdout, early.stderr), readers, strict=True):
        protocol = asyncio.StreamReaderProtocol(reader)
        await loop.connect_read_pipe(lambda: protocol, os.fdopen(fd, "rb", 0))  # noqa: B023
    # the writer's protocol only has to pause and resume `drain`: a reader's does that
    flow = asyncio.StreamReaderProtocol(asyncio.StreamReader())
    transport, _ = await loop.connect_write_pipe(lambda: flow, os.fdopen(early.stdin, "wb", 0))
    writer = asyncio.StreamWriter(transport, flow, None, loop)
    return AdoptedWorker(early.pid, exited, writer, readers[0], readers[1])


class AdoptedWorker:
    """What the SIP agent uses of ``asyncio.subprocess.Process``, for an adopted worker."""

    def __init__(
        self,
        pid: int,
        exited: int,
        stdin: asyncio.StreamWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
    ):
        import asyncio

        self.pid = pid
        self.stdin: asyncio.StreamWriter | None = stdin
        self.stdout: asyncio.StreamReader | None = stdout
        self.stderr: asyncio.StreamReader | None = stderr
        self.returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._pidfd = exited
        self._loop.add_reader(exited, self._reap)  # readable once the process has exited

    def _reap(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._exited.set_result(self.returncode)

    async def wait(self) -> int:
        import asyncio

        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
