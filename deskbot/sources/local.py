"""The local socket: `deskbot send` and `deskbot probe` hand their command to `deskbot run`.

A one-shot command otherwise starts a SIP worker of its own. When `deskbot run`
is up on the same host with the same settings, it carries the command out
instead: the same relay (same audit log, same limits), answered as the shell
answers (the same lines on stdout and stderr; the exit code from the same
outcomes). The socket is ``<audit log>.sock``, beside the audit log: 0600 in a
folder nobody else may write, like the audit log itself, and served only to
this user (the peer's uid, from the kernel). The client checks the same before
it connects (``trusted``), so a socket planted by another user is never asked.

One line of JSON each way. Client: ``{"v", "settings", "command", "user",
"json"}``; ``settings`` is a digest of the client's validated settings, so a
command read against another config is never carried out here. Server:
``{"ok": false, "why"}`` (the client sends on its own), or ``{"ok": true,
"err", "out", "sent", "outcomes"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deskbot.relay.relay import Relay
    from deskbot.relay.report import Report
    from deskbot.relay.values import Answer, Dispatch
    from deskbot.settings.schema import Settings

log = logging.getLogger("deskbot.local")

VERSION = 1
SUFFIX = ".sock"
MAX_PATH = 100  # a Unix socket's path holds 107 bytes
MAX_REQUEST = 1 << 16  # one request line
MAX_USER_CHARS = 64
AT_ONCE = 16  # commands carried out at once; more are told to send on their own
OTHERS = "it is not a socket of this user"  # (a service user's run, and sudo deskbot send)


def socket_path(audit_path: str) -> Path | None:
    """Where `deskbot run` with this audit log listens; None: no socket for it."""
    if audit_path == ":memory:" or audit_path.startswith("file:"):
        return None
    path = Path(audit_path + SUFFIX)
    return path if len(os.fsencode(path)) <= MAX_PATH else None


def untrusted(path: Path) -> str | None:
    """Why the socket at `path` (which exists) is not this user's alone; None if it is."""
    try:
        folder, found = os.stat(path.parent), os.lstat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    uid = os.getuid()
    if folder.st_uid != uid or folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"its folder {path.parent} is not this user's alone"
    if not stat.S_ISSOCK(found.st_mode) or found.st_uid != uid:
        return OTHERS
    if found.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"others may use it (mode {stat.S_IMODE(found.st_mode):o}, not 600)"
    return None


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (the kernel says)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def digest(settings: Settings) -> str:
    """What tells one set of validated settings from another (the secrets are not in it)."""
    # repr, not pickle: a pickle tells apart equal settings that share objects differently
    # (read from the settings cache, or validated afresh)
    return hashlib.sha256(repr(settings).encode()).hexdigest()


class LocalSource:
    """The socket `deskbot run` serves one-shot commands on (see the module's docstring)."""

    name = "local"

    def __init__(self, relay: Relay, settings: Callable[[], Settings], audit_path: str):
        self.relay = relay
        self._settings = settings  # what the service runs with now (it reloads)
        self.path = socket_path(audit_path)
        self._server: asyncio.Server | None = None
        self._digest: tuple[int, str] = (0, "")
        self._busy = 0
        self._inode = 0

    async def start(self) -> None:
        """Listen, unless the place is not safe or another `deskbot run` listens there."""
        path = self.path
        if path is None:
            return
        folder = os.stat(path.parent)
        if folder.st_uid != os.getuid() or folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            log.warning("not serving one-shot sends: %s is not this user's alone", path.parent)
            return
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                log.warning("not serving one-shot sends: %s is not a socket", path)
                return
            if await _answers(path):
                log.warning("not serving one-shot sends: another deskbot serves %s", path)
                return
            path.unlink()  # left by a deskbot run that ended without cleaning up
        old = os.umask(0o177)  # 0600 from the start: no moment others may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path, limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._inode = os.lstat(path).st_ino
        log.info("one-shot sends are taken on %s", path)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None or self.path is None:
            return
        server.close()
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._inode:
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if peer_uid(writer.get_extra_info("socket")) != os.getuid():
                return  # another user: not a word
            try:
                request = _request(await reader.readline())
            except (ValueError, asyncio.LimitOverrunError):
                return
            if request is None:
                answer: dict[str, Any] = {"ok": False, "why": "not a request"}
            elif request["settings"] != self._current():
                answer = {"ok": False, "why": "deskbot run has other settings"}
            elif self._busy >= AT_ONCE:
                answer = {"ok": False, "why": "busy"}
            else:
                self._busy += 1
                try:
                    answer = await self._carry_out(request)
                finally:
                    self._busy -= 1
            writer.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away: its command, if taken, is in the audit log
        finally:
            writer.close()

    def _current(self) -> str:
        settings = self._settings()
        if self._digest[0] != id(settings):
            self._digest = (id(settings), digest(settings))
        return self._digest[1]

    async def _carry_out(self, request: dict[str, Any]) -> dict[str, Any]:
        """The command as `deskbot send` runs it at the shell (see cli.shell._send)."""
        from deskbot.relay.report import Report
        from deskbot.relay.values import SHELL, Answer, ChatUser, Dispatch, Request
        from deskbot.sources.serve import carry_out

        replier = _Collect(request["json"])
        prepared = self.relay.prepare(Request(ChatUser(SHELL, request["user"]), request["command"]))
        if isinstance(prepared, Answer):
            await replier.answer(prepared)
            result: Report | Answer | None = prepared
        else:
            assert isinstance(prepared, Dispatch)  # the shell's requests have no key to replay
            result = await carry_out(self.relay, prepared, replier)
        if not isinstance(result, Report):
            return {"ok": True, "err": replier.err, "out": replier.out, "sent": False}
        from deskbot.relay.report import outcomes

        found = [outcome.value for outcome in outcomes(result)]
        return {"ok": True, "err": replier.err, "out": replier.out, "sent": True, "outcomes": found}


class _Collect:
    """The shell's replier (cli.shell.ShellReplier), into strings instead of stdout/stderr."""

    waiting_after = None

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.out = self.err = ""

    async def answer(self, answer: Answer) -> None:
        self.err += f"deskbot: {answer.text}\n"

    async def waiting(self, job: Dispatch) -> None:
        pass

    async def report(self, result: Report) -> None:
        from deskbot.relay.report import shell_lines

        self.out += shell_lines(result, self.as_json)


def _request(line: bytes) -> dict[str, Any] | None:
    """A client's line -> its request, if it has the right shape."""
    try:
        found = json.loads(line)
    except ValueError:
        return None
    if not isinstance(found, dict) or found.get("v") != VERSION:
        return None
    user, command = found.get("user"), found.get("command")
    if not isinstance(user, str) or not isinstance(command, str):
        return None
    if not isinstance(found.get("json"), bool) or not isinstance(found.get("settings"), str):
        return None
    user = " ".join(user.split())[:MAX_USER_CHARS] or f"uid {os.getuid()}"
    return {"user": user, "command": command, "json": found["json"], "settings": found["settings"]}


async def _answers(path: Path) -> bool:
    """Does somebody listen on the socket at `path`?"""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
