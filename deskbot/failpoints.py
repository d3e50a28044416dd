"""Crash points for the fault-injection tests: ``DESKBOT_FAILPOINT=NAME`` kills deskbot there.

The whole process group gets SIGKILL (deskbot and its SIP worker), as a power
cut or the OOM killer would. Unset, ``reached`` costs one comparison.
"""

from __future__ import annotations

import os
import signal

ARMED = os.environ.get("DESKBOT_FAILPOINT", "")


def reached(name: str) -> None:
    if name == ARMED:
        os.killpg(os.getpgrp(), signal.SIGKILL)
