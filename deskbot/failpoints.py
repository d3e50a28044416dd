"""Crash points for the fault-injection tests: ``DESKBOT_FAILPOINT=NAME`` kills deskbot there.

Honoured only when the test also sets ``DESKBOT_FAILPOINT_TEST=1``: a stray
variable in a cron job's environment does nothing. deskbot and the processes
it started (its SIP worker) get SIGKILL, as a power cut or the OOM killer
would; whatever else shares the process group (a wrapper script, its other
children) is left alone. Unset, ``reached`` costs one comparison.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

ARMED = (
    os.environ.get("DESKBOT_FAILPOINT", "")
    if os.environ.get("DESKBOT_FAILPOINT_TEST") == "1"
    else ""
)


def reached(name: str) -> None:
    if ARMED and name == ARMED:
        for pid in _descendants(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children of any of its threads), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            for child in map(int, (task / "children").read_text().split()):
                found += [child, *_descendants(child)]
    return found
