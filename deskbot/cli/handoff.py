"""`deskbot send` and `deskbot probe` through a running `deskbot run` (sources.local)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

from deskbot.cli import runhint
from deskbot.cli.exits import EXIT_NO_ANSWER, EXIT_NOTHING_SENT, code_of

if TYPE_CHECKING:
    from deskbot.settings.schema import Config

log = logging.getLogger("deskbot")

MAX_ANSWER = 1 << 28  # 10,000 phones' JSON lines are about 2.5 MB
GONE = (
    "deskbot: deskbot run ended before it answered: the phones may or may not have the "
    "text; its audit log has what was sent"
)


async def hand_off(cfg: Config, config: str, command: str, as_json: bool, user: str) -> int | None:
    """Carry the command out in a running `deskbot run`: the exit code, printed as the
    shell's own send prints; None when there is none to take it (then send on our own).
    ``config`` is the config file's path as given: a run that took the command is
    remembered under it (``runhint``), for the next command to start no worker early."""
    from deskbot.senders.base import Outcome
    from deskbot.sources import local

    s = cfg.settings
    path = None if s.audit.url else local.socket_path(s.audit.path)
    if path is None or not os.path.lexists(path):
        return None
    why = local.untrusted(path)
    if why == local.OTHERS:  # another user's deskbot run (root's `sudo deskbot send`, say)
        log.debug("not handing the send to %s: %s", path, why)
        return None
    if why is not None:  # ours, but others could have planted or read it: say so
        print(f"deskbot: not handing the send to {path}: {why}", file=sys.stderr)
        return None
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_ANSWER)
    except OSError:
        return None  # left behind by a deskbot run that is gone
    try:
        if local.peer_uid(writer.get_extra_info("socket")) != os.getuid():
            print(f"deskbot: not handing the send to {path}: another user", file=sys.stderr)
            return None
        request = {
            "v": local.VERSION,
            "settings": local.digest(s),
            "command": command,
            "user": user,
            "json": as_json,
        }
        writer.write(json.dumps(request, ensure_ascii=False).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    except (OSError, ValueError):
        line = b""  # the command may have been taken: never send it a second time
    finally:
        writer.close()
    try:
        answer = json.loads(line)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        print(GONE, file=sys.stderr)
        return EXIT_NO_ANSWER
    if not answer.get("ok"):
        return None  # other settings, busy: nothing was taken
    runhint.remember(config, str(path))
    sys.stderr.write(answer["err"])
    sys.stdout.write(answer["out"])
    if not answer["sent"]:
        return EXIT_NOTHING_SENT
    return code_of(Outcome(value) for value in answer["outcomes"])
