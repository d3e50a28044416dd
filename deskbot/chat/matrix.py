"""Matrix: `!deskphone ...` in a room -> relay; the report -> an m.notice in the command's thread.

- Login: the access token from ``access_token_env``; the token's device is
  kept (check ``device_id`` against it) so the crypto store in ``store`` stays
  valid across restarts. Encrypted rooms work: devices of room members are
  trusted automatically (it is a bot) and messages go out encrypted.
- No replay, no loss: on the first start the backlog is skipped (one sync,
  then the callbacks). The sync position is saved in ``store/sync-token``
  only after every reply of that sync batch (and of all earlier ones) went
  out, so a restart answers exactly the commands sent while deskbot was down.
  In a room joined later, timeline events up to the bot's own join are skipped.
- Access: only rooms in ``rooms`` (when set). Invites are accepted into those
  rooms from senders the relay allows; others are rejected. Sender policy
  is the relay's.
- Reactions: ✅ when every phone took the text, ❌ otherwise; ⏳ while the
  phones take longer than 0.3 s (removed once they answered).
- notify_admins sends an m.notice to each admin (``[access] admins`` with a
  ``matrix`` id) in a direct room, opening one when there is none: config
  problems name files and keys that other room members need not see.
"""

from __future__ import annotations

import asyncio
import collections
import html
import logging
import os
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    MatrixRoom,
    MegolmEvent,
    MessageDirection,
    RoomCreateResponse,
    RoomMemberEvent,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomSendResponse,
    SyncResponse,
    WhoamiResponse,
)

from deskbot import report
from deskbot.config import MatrixSettings
from deskbot.relay import Answer, ChatUser, Relay

log = logging.getLogger("deskbot.matrix")

SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}
SYNC_TIMEOUT_MS = 30_000
MAX_BACKFILL = 5000  # events read back per room after a gap (a long downtime in a busy room)
HOURGLASS, DONE, FAILED = "⏳", "✅", "❌"
HOURGLASS_AFTER = 0.3  # seconds of waiting for the phones before ⏳ shows


class MatrixError(Exception):
    """The homeserver or the credentials are wrong; the message says what to fix."""


class _Client(AsyncClient):
    """nio's client, telling the adapter when a request could not reach the server."""

    on_unreachable: Callable[[], None] = staticmethod(lambda: None)

    async def get_timeout_retry_wait_time(self, got_timeouts: int) -> float:
        self.on_unreachable()
        return await super().get_timeout_retry_wait_time(got_timeouts)


class MatrixAdapter:
    name = "matrix"

    def __init__(self, settings: MatrixSettings, relay: Relay, secret: Callable[[str], str]):
        self.settings = settings
        self.relay = relay
        self.store = Path(settings.store)
        self.token_file = self.store / "sync-token"
        self._token = secret(settings.access_token_env)
        self._connected = False
        self._client: _Client | None = None
        # sync batches in order: (next_batch, replies still going out)
        self._batches: collections.deque[tuple[str, set[asyncio.Task[None]]]] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[Any] | None = None
        self._since = ""  # the sync position the next sync response starts from
        self._direct_rooms: dict[str, str] = {}  # admin's Matrix id -> room for notices

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def client(self) -> _Client:
        assert self._client is not None, "start() first"
        return self._client

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self.store.mkdir(parents=True, exist_ok=True)
        # a few tries only: a wrong homeserver URL must fail the start, not hang it
        probe = AsyncClient(s.homeserver, s.user_id, config=AsyncClientConfig(max_timeouts=3))
        probe.access_token = self._token
        try:
            who = await probe.whoami()
        except Exception as exc:
            raise MatrixError(f"matrix: cannot reach {s.homeserver}: {exc}") from None
        finally:
            await probe.close()
        if not isinstance(who, WhoamiResponse):
            raise MatrixError(
                f"matrix: the homeserver refused the access token in ${s.access_token_env}: "
                f"{who.message}"
            )
        if who.user_id != s.user_id:
            raise MatrixError(
                f"matrix: the access token in ${s.access_token_env} belongs to {who.user_id}, "
                f"not matrix.user_id {s.user_id}"
            )
        device_id = who.device_id or s.device_id
        if device_id != s.device_id:
            log.warning(
                "matrix: the access token belongs to device %s, not matrix.device_id %s; "
                "using %s (log in with device_id %s to keep one device)",
                device_id,
                s.device_id,
                device_id,
                s.device_id,
            )
        config = AsyncClientConfig(
            encryption_enabled=True,
            store_sync_tokens=False,  # saved by us, only after the replies went out
            max_timeout_retry_wait_time=5,
            request_timeout=SYNC_TIMEOUT_MS / 1000 + 30,
        )
        client = _Client(s.homeserver, s.user_id, device_id, str(self.store), config=config)
        client.on_unreachable = self._unreachable
        client.restore_login(s.user_id, device_id, self._token)
        self._client = client
        saved = self._load_sync_token()
        if saved:
            client.next_batch = self._since = saved
            log.info("matrix: %s resumes from its saved sync position", s.user_id)
        else:
            # First start: skip the backlog; rooms and room state still come in.
            first = await client.sync(timeout=0, sync_filter=SYNC_FILTER, full_state=True)
            if not isinstance(first, SyncResponse):
                raise MatrixError(f"matrix: first sync failed: {first}")
            self._save_sync_token(first.next_batch)
            self._since = first.next_batch
            await self._accept_invites(first)
            log.info("matrix: %s logged in; backlog skipped", s.user_id)
        self._connected = True
        client.add_response_callback(self._on_sync, SyncResponse)

    async def run(self) -> None:
        self._runner = asyncio.current_task()
        while True:
            try:
                # full_state on the first sync: nio keeps room state (members, encryption)
                # in memory only, and a resumed start needs it
                await self.client.sync_forever(
                    timeout=SYNC_TIMEOUT_MS, sync_filter=SYNC_FILTER, full_state=True
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self._connected = False
                log.exception("matrix: sync loop failed; restarting it in 5 s")
                await asyncio.sleep(5)

    async def stop(self) -> None:
        if self._client is None:
            return
        self._client.stop_sync_forever()
        if self._runner is not None:  # no new commands; a half-read sync batch is read again
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        self._flush()
        self._connected = False
        await self._client.close()

    async def notify_admins(self, text: str) -> None:
        """A notice in a direct room with each admin (opened when there is none)."""
        people = self.relay.directory.people
        for name in self.relay.settings.access.admins:
            person = people.get(name)
            if person is None or not person.matrix:
                continue
            room_id = self._direct_rooms.get(person.matrix) or self._direct_room_with(person.matrix)
            if room_id is None:
                created = await self.client.room_create(
                    is_direct=True, invite=[person.matrix], preset=RoomPreset.trusted_private_chat
                )
                if not isinstance(created, RoomCreateResponse):
                    log.error("matrix: cannot open a direct room with admin %s", name)
                    continue
                room_id = created.room_id
            self._direct_rooms[person.matrix] = room_id
            await self._send(room_id, _notice(text))

    def _direct_room_with(self, user_id: str) -> str | None:
        for room in self.client.rooms.values():
            if room.member_count == 2 and user_id in (*room.users, *room.invited_users):
                return room.room_id
        return None

    # -- sync position ----------------------------------------------------------
    def _load_sync_token(self) -> str | None:
        try:
            return self.token_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _save_sync_token(self, token: str) -> None:
        tmp = self.token_file.with_suffix(".tmp")
        tmp.write_text(token)
        os.replace(tmp, self.token_file)

    def _flush(self, _task: object = None) -> None:
        """Save the newest position whose batch, and every batch before it, is answered."""
        token = None
        while self._batches and all(t.done() for t in self._batches[0][1]):
            token = self._batches.popleft()[0]
        if token:
            self._save_sync_token(token)

    def _unreachable(self) -> None:
        if self._connected:
            log.warning("matrix: %s unreachable; retrying", self.settings.homeserver)
        self._connected = False

    # -- events -----------------------------------------------------------------
    async def _on_sync(self, response: SyncResponse) -> None:
        if not self._connected:
            log.info("matrix: connected to %s again", self.settings.homeserver)
        self._connected = True
        batch: set[asyncio.Task[None]] = set()
        for room_id, info in response.rooms.join.items():
            room = self.client.rooms.get(room_id)
            if room is None:
                continue
            events = info.timeline.events
            if info.timeline.limited and self._since:
                # more happened than one sync carries: read the gap back to our last position
                events = [*await self._missed(room_id, info.timeline.prev_batch), *events]
            start = 0
            for i, event in enumerate(events):
                if _is_own_join(event, self.settings.user_id):
                    start = i + 1  # history before the bot joined is not for it
            for event in events[start:]:
                if isinstance(event, MegolmEvent):
                    log.warning(
                        "matrix: cannot decrypt event %s in %s (no room key)",
                        event.event_id,
                        room_id,
                    )
                    continue
                text = self._command_text(room, event)
                if text is not None:
                    batch.add(self._spawn(self._handle(room, event, text)))
        if response.rooms.invite:
            batch.add(self._spawn(self._accept_invites(response)))
        self._since = response.next_batch
        self._batches.append((response.next_batch, batch))
        for task in batch:
            task.add_done_callback(self._flush)
        self._flush()

    async def _missed(self, room_id: str, prev_batch: str) -> list[Any]:
        """Timeline events between our last sync position and ``prev_batch``, oldest first."""
        missed: list[Any] = []
        start: str | None = prev_batch
        while start and len(missed) < MAX_BACKFILL:
            page = await self.client.room_messages(
                room_id, start=start, end=self._since, direction=MessageDirection.back, limit=100
            )
            if not isinstance(page, RoomMessagesResponse) or not page.chunk:
                break
            missed.extend(page.chunk)
            start = page.end if page.end != start else None
        log.info("matrix: read %d missed event(s) back in %s", len(missed), room_id)
        return missed[::-1]

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _command_text(self, room: MatrixRoom, event: object) -> str | None:
        """The command after the prefix, or None when the event is not for the bot."""
        if not isinstance(event, RoomMessageText) or event.sender == self.settings.user_id:
            return None
        content = event.source.get("content", {})
        if content.get("msgtype") != "m.text":
            return None
        if content.get("m.relates_to", {}).get("rel_type") == "m.replace":
            return None  # edits are not new commands
        if self.settings.rooms and room.room_id not in self.settings.rooms:
            log.info("matrix: ignored a message in %s: not in matrix.rooms", room.room_id)
            return None
        text = _with_mentions(content) or _strip_reply_fallback(event.body).strip()
        prefix = self.settings.command
        if text.lower() == prefix.lower():
            return ""
        if text.lower().startswith(prefix.lower()) and text[len(prefix)].isspace():
            return text[len(prefix) :].strip()
        if room.member_count == 2:  # a direct chat: the prefix may be left out
            return text
        return None

    async def _handle(self, room: MatrixRoom, event: RoomMessageText, text: str) -> None:
        try:
            user = ChatUser("matrix", event.sender, room.user_name(event.sender) or "")
            prepared = self.relay.prepare(user, text or "help", place=room.room_id)
            reply = _ThreadReply(event)
            if isinstance(prepared, Answer):
                body = ("⚠️ " if prepared.error else "") + prepared.text
                await self._send(room.room_id, reply.content(body))
                return
            # ⏳ only when the phones are slow: a fast answer needs no "sending" sign,
            # and the reaction must not delay the phones or the reply
            delivery = asyncio.ensure_future(self.relay.deliver(prepared))
            done, _ = await asyncio.wait({delivery}, timeout=HOURGLASS_AFTER)
            waiting = None
            if not done:
                waiting = await self._react(room.room_id, event.event_id, HOURGLASS)
            result = await delivery
            await self._send(room.room_id, reply.content(report.plain(result)))
            if waiting:
                await self.client.room_redact(room.room_id, waiting)
            await self._react(room.room_id, event.event_id, DONE if result.ok else FAILED)
        except Exception:
            log.exception("matrix: failed to answer event %s in %s", event.event_id, room.room_id)

    async def _accept_invites(self, response: SyncResponse) -> None:
        for room_id, info in response.rooms.invite.items():
            inviter = next(
                (
                    e.sender
                    for e in info.invite_state
                    if isinstance(e, InviteMemberEvent)
                    and e.state_key == self.settings.user_id
                    and e.membership == "invite"
                ),
                "",
            )
            user = ChatUser("matrix", inviter)
            allowed_room = not self.settings.rooms or room_id in self.settings.rooms
            allowed_sender = self.relay.may_send(user, self.relay.person_of(user))
            if allowed_room and allowed_sender:
                log.info("matrix: joining %s on invite from %s", room_id, inviter)
                await self.client.join(room_id)
            else:
                why = "room not in matrix.rooms" if not allowed_room else "sender not allowed"
                log.warning("matrix: rejected invite to %s from %s: %s", room_id, inviter, why)
                await self.client.room_leave(room_id)

    # -- sending ----------------------------------------------------------------
    async def _send(
        self, room_id: str, content: dict[str, Any], kind: str = "m.room.message"
    ) -> str | None:
        client = self.client
        room = client.rooms.get(room_id)
        if room is not None and room.encrypted:
            await self._trust_members(room)
        response = await client.room_send(room_id, kind, content, ignore_unverified_devices=True)
        if isinstance(response, RoomSendResponse):
            return response.event_id
        log.warning("matrix: sending to %s failed: %s", room_id, getattr(response, "message", ""))
        return None

    async def _trust_members(self, room: MatrixRoom) -> None:
        client = self.client
        if client.should_query_keys:
            await client.keys_query()
        for user_id in room.users:
            for device in client.device_store.active_user_devices(user_id):
                if not device.verified and device.id != client.device_id:
                    client.verify_device(device)

    async def _react(self, room_id: str, event_id: str, key: str) -> str | None:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self._send(room_id, content, "m.reaction")


class _ThreadReply:
    """A reply in the command's thread, with a reply fallback for clients without threads."""

    def __init__(self, command: RoomMessageText):
        relates = command.source.get("content", {}).get("m.relates_to", {})
        in_thread = relates.get("rel_type") == "m.thread" and relates.get("event_id")
        self.root = relates["event_id"] if in_thread else command.event_id
        self.command = command.event_id

    def content(self, text: str) -> dict[str, Any]:
        return {
            **_notice(text),
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": self.root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": self.command},
            },
        }


def _notice(text: str) -> dict[str, Any]:
    return {
        "msgtype": "m.notice",
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": report.to_html(text),
    }


def _is_own_join(event: object, user_id: str) -> bool:
    return (
        isinstance(event, RoomMemberEvent)
        and event.state_key == user_id
        and event.membership == "join"
        and event.prev_membership != "join"
    )


_PILL = re.compile(r'<a\s[^>]*href="https://matrix\.to/#/(@[^"?/]+)[^"]*"[^>]*>.*?</a>', re.S)


def _with_mentions(content: dict[str, Any]) -> str:
    """The text with mention pills as Matrix ids (``@bob:example.com``), or "" if none.

    Clients put a person's display name in the plain body, which may hold
    spaces; the HTML body links the id, which the directory knows.
    """
    formatted = content.get("formatted_body")
    if content.get("format") != "org.matrix.custom.html" or not isinstance(formatted, str):
        return ""
    if "matrix.to/#/@" not in formatted:
        return ""
    text = re.sub(r"<mx-reply>.*?</mx-reply>", "", formatted, flags=re.S)
    text = _PILL.sub(lambda m: urllib.parse.unquote(m.group(1)), text)
    text = re.sub(r"<br\s*/?>", "\n", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


_FALLBACK = re.compile(r"\A(?:> [^\n]*\n)+\n?")


def _strip_reply_fallback(body: str) -> str:
    """Drop the `> <@user> quoted` lines clients put in front of a reply."""
    return _FALLBACK.sub("", body, count=1) if body.startswith("> ") else body


__all__ = ["MatrixAdapter", "MatrixError"]
