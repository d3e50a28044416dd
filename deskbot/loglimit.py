"""Log lines about refused input, rate-limited: a flood must not fill the disk.

Whoever can reach a listener or a NATS subject decides how often deskbot
refuses something; each kind of refusal (its format string) is logged at
most ``burst`` times per ``window`` seconds, and the next line allowed says
how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    def __init__(
        self,
        log: logging.Logger,
        burst: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.log, self.burst, self.window, self.clock = log, burst, window, clock
        self._kinds: dict[str, list[float | int]] = {}  # format -> [window start, lines, left out]

    def warning(self, msg: str, *args: object) -> None:
        self._emit(logging.WARNING, msg, args)

    def info(self, msg: str, *args: object) -> None:
        self._emit(logging.INFO, msg, args)

    def _emit(self, level: int, msg: str, args: tuple[object, ...]) -> None:
        now = self.clock()
        kind = self._kinds.get(msg)
        if kind is None or now - kind[0] >= self.window:
            left_out = int(kind[2]) if kind else 0
            kind = self._kinds[msg] = [now, 0, 0]
            if left_out:
                self.log.log(level, "%d more like the next were not logged", left_out)
        if kind[1] >= self.burst:
            kind[2] += 1
            return
        kind[1] += 1
        self.log.log(level, msg, *args)
