"""Is a `deskbot run` up for this command's config? Asked before anything is imported.

`deskbot send` and `deskbot probe` start their SIP worker before they read the
config (``deskbot.senders.sip.early``), so that its start-up runs beside theirs.
When a running `deskbot run` takes the command (``cli.handoff``) that worker is
never used. Only the config says where the run's socket is, and reading the config
takes longer than the worker's head start is worth; so a hand-off leaves a hint:
a symlink in the settings cache folder, named after the config file's path,
pointing at the socket that took the command. The console script looks at it with
three system calls and starts no worker early when the socket it names is there.

A hint only decides whether a worker starts early, never where a command goes:
the hand-off reads the config as before, and spawns a worker when no run takes
the command, and then removes the hint. A wrong or planted hint costs one send some
milliseconds, nothing else.
Only ``os``, ``zlib`` and ``deskbot.settings.paths`` (``os`` alone) are imported here.
"""

from __future__ import annotations

import os
import zlib
from typing import TYPE_CHECKING

from deskbot.settings import paths

if TYPE_CHECKING:
    from collections.abc import Sequence

FOLDER = "runs"  # under the settings cache folder (settings.paths.cache_folder)
_CONFIG_FLAGS = ("-c", "--config")
expected = False  # set by the console script: a run is up, so no worker was started early


def config_of(argv: Sequence[str]) -> str:
    """The config file a command line reads, as ``settings.load.find_path`` finds it."""
    found = None
    words = iter(argv)
    for word in words:
        if word in _CONFIG_FLAGS:
            found = next(words, None)
        elif word.startswith("--config="):
            found = word.partition("=")[2]
        elif word.startswith("-c") and len(word) > 2 and not word.startswith("--"):
            found = word[2:]
    return paths.config_path(found)


def hint_path(config: str) -> str | None:
    """Where the hint for ``config`` lives; None without a cache folder."""
    folder = paths.cache_folder()
    if folder is None:
        return None
    where = os.fsencode(os.path.abspath(config))
    return os.path.join(folder, FOLDER, f"{zlib.crc32(where):08x}-{len(where)}")


def run_is_up(argv: Sequence[str]) -> bool:
    """Whether the last hand-off for this config went to a socket that is still there."""
    hint = hint_path(config_of(argv))
    if hint is None:
        return False
    try:
        folder = os.lstat(os.path.dirname(hint))
        if folder.st_uid != os.geteuid() or folder.st_mode & 0o022:
            return False  # not this user's own folder: not believed
        return os.path.exists(os.readlink(hint))
    except OSError:
        return False


def remember(config: str, socket: str) -> None:
    """After a hand-off: the next command on ``config`` finds its run without a worker."""
    hint = hint_path(config)
    if hint is None:
        return
    try:
        if os.readlink(hint) == socket:
            return
    except OSError:
        pass
    folder = os.path.dirname(hint)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        new = f"{hint}.{os.getpid()}"
        os.symlink(socket, new)
        os.replace(new, hint)  # atomic: a command reading it sees the old link or the new
    except OSError:
        pass  # no hint: the next command starts its worker early, as without one


def forget(config: str) -> None:
    """The hint was wrong (the run refused the command, or is gone): the next command on
    ``config`` starts its worker early again, until a run takes one."""
    hint = hint_path(config)
    if hint is not None:
        try:  # noqa: SIM105 (contextlib is not imported here: see the module's doc)
            os.unlink(hint)
        except OSError:
            pass
