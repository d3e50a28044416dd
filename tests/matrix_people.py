"""People at Matrix clients and a `deskbot run` configured for them: the Matrix fixtures."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DeskbotRun, write_config
from matrix_server import Account, Synapse
from nio import (
    AsyncClient,
    AsyncClientConfig,
    RoomCreateResponse,
    RoomSendResponse,
    SyncResponse,
)

DEVICE = "DESKBOT"
SYNC_FILTER = {"room": {"timeline": {"limit": 100}}}
ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


class Person:
    """A person at a Matrix client (matrix-nio with end-to-end encryption)."""

    def __init__(self, server: Synapse, account: Account, store: Path):
        store.mkdir(parents=True, exist_ok=True)
        self.account = account
        self.client = AsyncClient(
            server.url,
            account.user_id,
            account.device_id,
            str(store),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
        )
        self.client.restore_login(account.user_id, account.device_id, account.access_token)
        self.events: list[tuple[str, dict[str, Any]]] = []  # (room id, event) as seen

    @property
    def user_id(self) -> str:
        return self.account.user_id

    async def sync(self, timeout_ms: int = 0) -> None:
        resp = await self.client.sync(timeout=timeout_ms, sync_filter=SYNC_FILTER)
        assert isinstance(resp, SyncResponse), resp
        for room_id, info in resp.rooms.join.items():
            self.events += [(room_id, e.source) for e in info.timeline.events]
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        if self.client.should_query_keys:
            await self.client.keys_query()

    async def create_room(self, invite: list[str] = (), encrypted: bool = False) -> str:
        resp = await self.client.room_create(
            invite=list(invite), initial_state=[ENCRYPTION] if encrypted else []
        )
        assert isinstance(resp, RoomCreateResponse), resp
        await self.sync()
        return resp.room_id

    async def say(self, room_id: str, text: str, thread: str | None = None) -> str:
        content: dict[str, Any] = {"msgtype": "m.text", "body": text}
        if thread:
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": thread,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": thread},
            }
        for device in self._devices_of_room(room_id):
            self.client.verify_device(device)
        resp = await self.client.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        assert isinstance(resp, RoomSendResponse), resp
        return resp.event_id

    def _devices_of_room(self, room_id: str) -> list:
        room = self.client.rooms.get(room_id)
        users = room.users if room else {}
        return [d for u in users for d in self.client.device_store.active_user_devices(u)]

    async def wait(self, what: str, found: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := found()):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            await self.sync(timeout_ms=500)
        return value

    # -- what the person sees -----------------------------------------------------
    def replies_to(self, command: str) -> list[dict[str, Any]]:
        """The bot's notices that reply to `command`."""
        return [
            e
            for _, e in self.events
            if e.get("content", {}).get("msgtype") == "m.notice"
            and e["content"].get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
            == command
        ]

    async def reply_to(self, command: str, timeout: float = 15.0) -> dict[str, Any]:
        return (
            await self.wait(f"the reply to {command}", lambda: self.replies_to(command), timeout)
        )[0]

    def reactions_to(self, command: str) -> dict[str, str]:
        """key -> reaction event id, without those redacted since."""
        redacted = {e.get("redacts") or e.get("content", {}).get("redacts") for _, e in self.events}
        return {
            e["content"]["m.relates_to"]["key"]: e["event_id"]
            for _, e in self.events
            if e.get("type") == "m.reaction"
            and e["content"]["m.relates_to"]["event_id"] == command
            and e["event_id"] not in redacted
        }

    def redacted_reactions_to(self, command: str) -> list[str]:
        redacted = {e.get("redacts") or e.get("content", {}).get("redacts") for _, e in self.events}
        return [
            e["content"]["m.relates_to"]["key"]
            for _, e in self.events
            if e.get("type") == "m.reaction"
            and e["content"]["m.relates_to"]["event_id"] == command
            and e["event_id"] in redacted
        ]

    def membership(self, room_id: str, user_id: str) -> str | None:
        states = [
            e["content"].get("membership")
            for r, e in self.events
            if r == room_id and e.get("type") == "m.room.member" and e.get("state_key") == user_id
        ]
        return states[-1] if states else None

    async def close(self) -> None:
        await self.client.close()


class Deskbot(DeskbotRun):
    """`deskbot run -c CONFIG` with the bot's token in the environment."""

    def __init__(self, config: Path, token: str, workdir: Path):
        super().__init__(config, {"DESKBOT_MATRIX_TOKEN": token}, workdir / "deskbot.log")


CONFIG = """
[sip]
listen = "127.0.0.1:0"
timeout = {timeout}
[health]
listen = "127.0.0.1:0"
[audit]
path = "{audit}"
[access]
senders = {senders}
admins = {admins}
[phones.486]
uri = "{p486}"
label = "Reception"
[phones.487]
uri = "{p487}"
label = "Lab"
[phones.488]
uri = "{p488}"
label = "Storage"
[phones.489]
uri = "{p489}"
label = "Kitchen"
[groups.floor]
members = ["486", "487", "489"]
[people.alice]
phone = "486"
matrix = "{alice}"
[matrix]
homeserver = "{url}"
user_id = "{bot}"
device_id = "{device}"
command = "!deskphone"
rooms = {rooms}
store = "{tmp}/matrix"
"""


def config_text(
    tmp: Path,
    server: Synapse,
    bot: Account,
    alice: str,
    phones: dict[str, str],
    rooms: list[str] = (),
    senders: list[str] | None = None,
    admins: list[str] = (),
    extra: str = "",
    timeout: float = 1.0,
    audit: Path | None = None,
) -> str:
    quoted = lambda items: "[" + ", ".join(f'"{i}"' for i in items) + "]"  # noqa: E731
    return CONFIG.format(
        tmp=tmp,
        url=server.url,
        bot=bot.user_id,
        device=DEVICE,
        alice=alice,
        rooms=quoted(rooms),
        senders='"*"' if senders is None else quoted(senders),
        admins=quoted(admins),
        timeout=timeout,
        audit=audit or tmp / "audit.sqlite3",
        **{f"p{ext}": uri for ext, uri in phones.items()},
    ) + textwrap.dedent(extra)


@pytest.fixture
async def people(synapse: Synapse, tmp_path: Path):
    """people("alice") -> a newly registered person at a Matrix client."""
    made: list[Person] = []

    def make(name: str) -> Person:
        made.append(Person(synapse, synapse.register(name), tmp_path / f"client-{len(made)}"))
        return made[-1]

    yield make
    for person in made:
        await person.close()


@pytest.fixture
def deskbots() -> Iterator[list[Deskbot]]:
    started: list[Deskbot] = []
    yield started
    for bot in started:
        bot.stop()


@pytest.fixture
def deskbot(synapse: Synapse, deskbots, tmp_path: Path):
    """deskbot(bot, alice, phones, rooms=..., senders=...) -> a configured, unstarted Deskbot."""

    def make(bot: Account, alice: Person, phones: dict[str, str], **keys: Any) -> Deskbot:
        filled = {"486": "", "487": "", "488": "", "489": "", **phones}
        filled = {ext: uri or f"sip:{ext}@127.0.0.1:9" for ext, uri in filled.items()}
        etc = tmp_path / "etc"  # alone in its folder: the config watcher sees only it
        etc.mkdir(exist_ok=True)
        path = write_config(
            etc / "deskbot.toml",
            config_text(tmp_path, synapse, bot, alice.user_id, filled, **keys),
        )
        deskbots.append(Deskbot(path, bot.access_token, tmp_path))
        return deskbots[-1]

    return make


@pytest.fixture
def bot(synapse: Synapse) -> Account:
    """deskbot's own account, logged in on the configured device."""
    return synapse.register("deskbot", DEVICE)


def join(server: Synapse, account: Account, room_id: str) -> None:
    """The bot joins a room before deskbot runs (as if it had joined long ago)."""
    server.request("POST", f"/_matrix/client/v3/join/{room_id}", {}, token=account.access_token)


async def alice_in_a_room_with_the_bot(
    server: Synapse,
    people: Callable[[str], Person],
    bot: Account,
) -> tuple[Person, str]:
    """A new person "alice" and a room of hers that the bot has joined."""
    alice = people("alice")
    room = await alice.create_room(invite=[bot.user_id])
    join(server, bot, room)
    return alice, room


def text_of(event: dict[str, Any]) -> str:
    return event["content"]["body"]
