"""The Matrix source: nio client, sync loop, invites, and answering in the command's thread.

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
import contextlib
import logging
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

from deskbot.relay import report
from deskbot.relay.relay import Relay
from deskbot.relay.values import Answer, ChatUser, Dispatch, Request
from deskbot.settings.schema import MatrixSettings
from deskbot.sources.matrix import wire
from deskbot.sources.matrix.sync import SyncPosition
from deskbot.sources.serve import serve

log = logging.getLogger("deskbot.matrix")

SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}
STATE_ONLY = {"room": {"timeline": {"limit": 0}}, "presence": {"limit": 0}}
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


class MatrixSource:
    name = "matrix"

    def __init__(self, settings: MatrixSettings, relay: Relay, secret: Callable[[str], str]):
        self.settings = settings
        self.relay = relay
        self.store = Path(settings.store)
        self.position = SyncPosition(self.store / "sync-token")
        self._token = secret(settings.access_token_env)
        self._connected = False
        self._client: _Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[Any] | None = None
        self._since = ""  # the sync position the next sync response starts from
        self._direct_rooms: dict[str, str] = {}  # admin's Matrix id -> room for notices
        self._synced = asyncio.Event()  # the rooms are known (a resumed start learns them late)

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
        saved = self.position.load()
        if saved:
            # the rooms' state (nio keeps it in memory only), without any timeline: a deferred
            # send due right after the restart may answer in a room with no new event
            rooms = await client.sync(timeout=0, sync_filter=STATE_ONLY, full_state=True)
            if not isinstance(rooms, SyncResponse):
                raise MatrixError(f"matrix: first sync failed: {rooms}")
            client.next_batch = self._since = saved
            log.info("matrix: %s resumes from its saved sync position", s.user_id)
        else:
            # First start: skip the backlog; rooms and room state still come in.
            first = await client.sync(timeout=0, sync_filter=SYNC_FILTER, full_state=True)
            if not isinstance(first, SyncResponse):
                raise MatrixError(f"matrix: first sync failed: {first}")
            self.position.save(first.next_batch)
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
        self.position.flush()
        self._connected = False
        await self._client.close()

    async def notify_admins(self, text: str) -> None:
        """A notice in a direct room with each admin (opened when there is none)."""
        for user_id in self.relay.admin_ids(self.name):
            room_id = self._direct_rooms.get(user_id) or self._direct_room_with(user_id)
            if room_id is None:
                created = await self.client.room_create(
                    is_direct=True, invite=[user_id], preset=RoomPreset.trusted_private_chat
                )
                if not isinstance(created, RoomCreateResponse):
                    log.error("matrix: cannot open a direct room with admin %s", user_id)
                    continue
                room_id = created.room_id
            self._direct_rooms[user_id] = room_id
            await self.send(room_id, wire.notice(text))

    def _direct_room_with(self, user_id: str) -> str | None:
        for room in self.client.rooms.values():
            if room.member_count == 2 and user_id in (*room.users, *room.invited_users):
                return room.room_id
        return None

    # -- connection -------------------------------------------------------------
    def _unreachable(self) -> None:
        if self._connected:
            log.warning("matrix: %s unreachable; retrying", self.settings.homeserver)
        self._connected = False

    # -- events -----------------------------------------------------------------
    async def _on_sync(self, response: SyncResponse) -> None:
        if not self._connected:
            log.info("matrix: connected to %s again", self.settings.homeserver)
        self._connected = True
        self._synced.set()
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
                try:
                    text = self._command_text(room, event)
                except Exception as exc:  # every field is untrusted: skip the event, not the batch
                    log.warning("matrix: skipped malformed event in %s: %r", room_id, exc)
                    continue
                if text is not None:
                    batch.add(self._spawn(self._handle(room, event, text)))
        if response.rooms.invite:
            batch.add(self._spawn(self._accept_invites(response)))
        self._since = response.next_batch
        self.position.batch(response.next_batch, batch)

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
        if self.settings.rooms and room.room_id not in self.settings.rooms:
            log.info("matrix: ignored a message in %s: not in matrix.rooms", room.room_id)
            return None
        return wire.command_text(
            event.source.get("content"),
            event.body,
            self.settings.command,
            direct=room.member_count == 2,
            mentions=self.relay.allows(ChatUser("matrix", event.sender)),
        )

    async def _handle(self, room: MatrixRoom, event: RoomMessageText, text: str) -> None:
        try:
            content = event.source.get("content", {})
            user = ChatUser("matrix", event.sender, room.user_name(event.sender) or "")
            request = Request(
                user,
                text or "help",
                place=room.room_id,
                key=event.event_id,
                sent_at=event.server_timestamp / 1000 if event.server_timestamp else None,
                thread=f"{wire.thread_root(content, event.event_id)} {event.event_id}",
            )
            replier = MatrixReplier(self, room.room_id, event.event_id, content)
            await serve(self.relay, request, replier)
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
            allowed_room = not self.settings.rooms or room_id in self.settings.rooms
            allowed_sender = self.relay.allows(ChatUser("matrix", inviter))
            if allowed_room and allowed_sender:
                log.info("matrix: joining %s on invite from %s", room_id, inviter)
                await self.client.join(room_id)
            else:
                why = "room not in matrix.rooms" if not allowed_room else "sender not allowed"
                log.warning("matrix: rejected invite to %s from %s: %s", room_id, inviter, why)
                await self.client.room_leave(room_id)

    # -- sending ----------------------------------------------------------------
    async def send(
        self,
        room_id: str,
        content: dict[str, Any],
        kind: str = "m.room.message",
        tx_id: str | None = None,
    ) -> str | None:
        """Send an event; a ``tx_id`` makes a repeat after a restart a no-op at the server."""
        client = self.client
        if room_id not in client.rooms:  # a deferred send's answer right after a restart
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait(), SYNC_TIMEOUT_MS / 1000)
        room = client.rooms.get(room_id)
        if room is not None and room.encrypted:
            await self._trust_members(room)
        response = await client.room_send(
            room_id, kind, content, tx_id=tx_id, ignore_unverified_devices=True
        )
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

    def replier_for(self, user: ChatUser, place: str, thread: str, key: str) -> MatrixReplier:
        """A later answer: in the command's thread (``thread``: "ROOT EVENT"), else the room."""
        root, _, event_id = thread.partition(" ")
        if not event_id:
            return MatrixReplier(self, place, "", {}, tag=key)
        relates = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
        return MatrixReplier(self, place, event_id, relates, tag=key)

    async def react(self, room_id: str, event_id: str, key: str) -> str | None:
        content = wire.reaction(event_id, key)
        return await self.send(room_id, content, "m.reaction", wire.tx_id(event_id, key))


class MatrixReplier:
    """Answers one command: in its thread, with ⏳ while the phones are slow and ✅/❌ after."""

    waiting_after = HOURGLASS_AFTER

    def __init__(
        self,
        source: MatrixSource,
        room_id: str,
        event_id: str,
        content: dict[str, Any],
        tag: str = "",
    ):
        """``event_id`` "": a notice in the room, not a reply. ``tag``: a later answer's key."""
        self.source, self.room_id, self.event_id, self.content = source, room_id, event_id, content
        self.tag = tag
        self.hourglass: str | None = None

    def _reply(self, text: str) -> dict[str, Any]:
        if not self.event_id:
            return wire.notice(text)
        return wire.thread_reply(self.content, self.event_id, text)

    async def _send_reply(self, text: str) -> None:
        # one transaction id per answer: a reply sent again after a crash is the same event
        tx_id = wire.tx_id(self.event_id or self.tag, f"reply {self.tag}".strip())
        if await self.source.send(self.room_id, self._reply(text), tx_id=tx_id) is None:
            raise MatrixError(f"the reply to {self.event_id or self.tag} was not sent")

    async def answer(self, answer: Answer) -> None:
        await self._send_reply(report.answer_text(answer.text, answer.error))

    async def waiting(self, job: Dispatch) -> None:
        if self.event_id and not self.tag:
            self.hourglass = await self.source.react(self.room_id, self.event_id, HOURGLASS)

    async def report(self, result: report.Report) -> None:
        await self._send_reply(report.plain(result))
        if self.hourglass:
            await self.source.client.room_redact(self.room_id, self.hourglass)
        if self.event_id and not self.tag:  # a later send's answer is in its thread
            mark = DONE if result.ok else FAILED
            await self.source.react(self.room_id, self.event_id, mark)


def _is_own_join(event: object, user_id: str) -> bool:
    return (
        isinstance(event, RoomMemberEvent)
        and event.state_key == user_id
        and event.membership == "join"
        and event.prev_membership != "join"
    )
