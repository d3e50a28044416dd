"""The `deskbot` console script: a one-shot command starts its SIP worker first.

`deskbot send` and `deskbot probe` spend most of their time starting two
interpreters, this one and the SIP worker's. The worker is spawned here,
before anything but the standard library is imported, so its start-up runs
beside the parent's (``deskbot.senders.sip.early``); then the commands are
imported and run. When the last such command on this config was taken by a
running `deskbot run` whose socket is still there (``deskbot.cli.runhint``), no
worker is started: the run will most likely take this one too.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from deskbot.cli import runhint
from deskbot.senders.sip import early

if TYPE_CHECKING:
    from collections.abc import Sequence

ONE_SHOT = ("send", "probe")
_TAKES_VALUE = ("-c", "--config")


def command_of(argv: Sequence[str]) -> str | None:
    """The command word of a `deskbot` command line (`-c x send ...` -> 'send')."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _TAKES_VALUE:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def main() -> int:
    """The `deskbot` console script."""
    if command_of(sys.argv[1:]) in ONE_SHOT:
        if runhint.run_is_up(sys.argv[1:]):
            runhint.expected = True  # no worker yet: spawned only if the run does not take it
        else:
            early.start_worker()
    from deskbot.cli.commands import main as cli_main

    return cli_main()
