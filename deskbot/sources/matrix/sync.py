"""The Matrix sync position, saved only once every reply of its batch (and earlier ones) went out.

A restart then resumes from the last batch that was fully answered: the
commands sent while deskbot was down, or mid-reply when it died, are read
again and none is skipped.
"""

from __future__ import annotations

import asyncio
import collections
import os
from pathlib import Path


class SyncPosition:
    def __init__(self, path: Path):
        self.path = path
        # sync batches in order: (next_batch, replies still going out)
        self._batches: collections.deque[tuple[str, set[asyncio.Task[None]]]] = collections.deque()

    def load(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def save(self, token: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(token)
        os.replace(tmp, self.path)

    def batch(self, next_batch: str, replies: set[asyncio.Task[None]]) -> None:
        """A sync response was read; ``replies`` answer its commands."""
        self._batches.append((next_batch, replies))
        for task in replies:
            task.add_done_callback(self.flush)
        self.flush()

    def flush(self, _task: object = None) -> None:
        """Save the newest position whose batch, and every batch before it, is answered."""
        token = None
        while self._batches and all(t.done() for t in self._batches[0][1]):
            token = self._batches.popleft()[0]
        if token:
            self.save(token)
