"""Load over Matrix: 20 people send 10 commands each, at once, to phones of different speeds.

Every command is answered once, in its own thread, with its own phone; the
per-sender and per-phone limits hold exactly; each phone got exactly what
the chat says it got. ``bench/matrix_load.py`` runs the same scenario and
prints its figures (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import collections
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conftest import SippPhone, phone_got, until, wait_for
from matrix_people import Person, join
from matrix_server import Account, Synapse

PEOPLE, COMMANDS = 20, 10
PER_SENDER, PER_PHONE = 8, 30  # 20 x 8 = 160 sends, 40 per phone: 30 go out, 10 are held back
DELAYS_MS = {"486": 0, "487": 50, "488": 200, "489": 500}  # phones of different speeds
LIMITS = f"""
[limits]
per_sender_per_minute = {PER_SENDER}
per_phone_per_minute = {PER_PHONE}
"""


@dataclass
class Outcome:
    commands_per_second: float
    reply_ms: list[float]  # command to reply, by the homeserver's clock

    @property
    def p50(self) -> float:
        return statistics.median(self.reply_ms)

    @property
    def p99(self) -> float:
        ordered = sorted(self.reply_ms)
        return ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]


def phone_for(person: int, command: int) -> str:
    return list(DELAYS_MS)[(person + command) % len(DELAYS_MS)]


async def crowd(
    server: Synapse, make_person: Callable[[str], Person], bot: Account
) -> tuple[list[Person], str]:
    """PEOPLE people in one room with the bot."""
    people = [make_person(f"p{i}") for i in range(PEOPLE)]
    room = await people[0].create_room(invite=[bot.user_id, *(p.user_id for p in people[1:])])
    join(server, bot, room)
    for person in people[1:]:
        join(server, person.account, room)
    await asyncio.gather(*(p.sync() for p in people))
    return people, room


def room_events(server: Synapse, person: Person, room: str) -> list[dict[str, Any]]:
    """Every event of the room, oldest first (a sync would cut a busy timeline short)."""
    events: list[dict[str, Any]] = []
    start = ""
    while True:
        query = f"dir=b&limit=1000{'&from=' + start if start else ''}"
        page = server.request(
            "GET",
            f"/_matrix/client/v3/rooms/{room}/messages?{query}",
            token=person.account.access_token,
        )
        events += page.get("chunk", [])
        if not page.get("chunk") or "end" not in page:
            return events[::-1]
        start = page["end"]


def replies(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """command event id -> the bot's notices that reply to it."""
    found: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in events:
        content = e.get("content", {})
        if content.get("msgtype") == "m.notice":
            found[content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")].append(
                e
            )
    return found


async def load(
    server: Synapse, people: list[Person], room: str, phones: dict[str, SippPhone]
) -> Outcome:
    """Send every command at once and check what everyone sees; the figures of the run."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def send_all(i: int, person: Person) -> list[str]:
        return [
            await person.say(room, f"!deskphone {phone_for(i, j)} p{i} c{j}")
            for j in range(COMMANDS)
        ]

    sent = await asyncio.gather(*(send_all(i, p) for i, p in enumerate(people)))
    commands = {event_id: (i, j) for i, ids in enumerate(sent) for j, event_id in enumerate(ids)}

    def answered() -> dict[str, list[dict[str, Any]]] | None:
        found = replies(room_events(server, people[0], room))
        return found if all(found.get(c) for c in commands) else None

    found = await until(answered, 120, "a reply to every command", every=0.5)
    elapsed = loop.time() - started
    stamps = {e["event_id"]: e["origin_server_ts"] for e in room_events(server, people[0], room)}

    texts_sent: dict[str, list[str]] = collections.defaultdict(list)
    refused: collections.Counter[int] = collections.Counter()
    held: collections.Counter[str] = collections.Counter()
    reply_ms = []
    for command, (i, j) in commands.items():
        [reply] = found[command]  # once, and in its own thread:
        assert reply["content"]["m.relates_to"]["event_id"] == command
        body = reply["content"]["body"]
        ext = phone_for(i, j)
        reply_ms.append(stamps[reply["event_id"]] - stamps[command])
        if body.startswith("⚠️ slow down"):
            refused[i] += 1
        elif re.match(rf"🚫 {ext}( \(\w+\))?: not sent: {ext} got {PER_PHONE} messages", body):
            held[ext] += 1
        else:  # nothing crossed between threads: the reply names this command's phone
            assert re.match(rf"✅ {ext}( \(\w+\))?: 200 OK", body), body
            texts_sent[ext].append(f"p{i} c{j}")
    assert refused == {i: COMMANDS - PER_SENDER for i in range(PEOPLE)}
    for ext, phone in phones.items():
        wait_for(lambda p=phone: len(p.received()) >= PER_PHONE, what=f"{PER_PHONE} at {ext}")
        got = [m.body.decode() for m in phone_got(phone)]
        assert len(got) == PER_PHONE
        received = sorted(body.split(": ", 1)[1] for body in got)
        assert received == sorted(texts_sent[ext])  # the chat says what the phone got
        assert held[ext] == PEOPLE * PER_SENDER // len(phones) - PER_PHONE
    return Outcome(len(commands) / elapsed, reply_ms)


async def test_twenty_people_at_once_are_each_answered_once_in_their_own_threads(
    synapse: Synapse, sipp, people, bot: Account, deskbot
):
    phones: dict[str, Any] = {ext: sipp(200, delay_ms=ms) for ext, ms in DELAYS_MS.items()}
    crowd_, room = await crowd(synapse, people, bot)
    run = deskbot(
        bot, crowd_[0], {ext: p.uri(ext) for ext, p in phones.items()}, extra=LIMITS, timeout=5.0
    ).start()
    outcome = await load(synapse, crowd_, room, phones)
    assert outcome.reply_ms and run.stop() == 0
