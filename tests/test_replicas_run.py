"""Two `deskbot run` on one PostgreSQL and one Synapse, each with its own Matrix device.

Both replicas see every command of the room. A burst is answered once per
command and each phone gets each text once. When one replica is SIGKILLed
(with its SIP worker) while a phone is still answering, the other answers the
dead one's commands within `lease` + 5 s: each command once, each phone given
each text at most once, and what the chat says matches what the phones got.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from conftest import SippPhone, wait_for, write_config
from matrix_people import Deskbot, alice_in_a_room_with_the_bot, config_text, text_of
from matrix_server import Account, Synapse
from postgres_server import PASSWORD_ENV, Postgres

LEASE = 2.0


def replica(
    tmp_path: Path,
    name: str,
    synapse: Synapse,
    bot: Account,
    alice,
    phones: dict[str, str],
    url: str,
    started: list[Deskbot],
) -> Deskbot:
    """A replica: the same settings but its own folder (Matrix store), device and ports."""
    folder = tmp_path / name
    folder.mkdir()
    login = synapse.request(
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": bot.user_id},
            "password": bot.password,
            "device_id": f"DESKBOT{name.upper()}",
        },
    )
    filled = {"486": "", "487": "", "488": "", "489": "", **phones}
    filled = {ext: uri or f"sip:{ext}@127.0.0.1:9" for ext, uri in filled.items()}
    text = config_text(folder, synapse, bot, alice.user_id, filled, timeout=8.0)
    text = re.sub(r'\[audit\]\npath = "[^"]*"', "", text)
    text = text.replace('device_id = "DESKBOT"', f'device_id = "{login["device_id"]}"')
    text += f'[audit]\nurl = "{url}"\npassword_env = "{PASSWORD_ENV}"\nlease = {LEASE}\n'
    run = Deskbot(write_config(folder / "deskbot.toml", text), login["access_token"], folder)
    started.append(run)
    return run


def calls(phone: SippPhone) -> list[str]:
    """The texts a phone got, once per MESSAGE (retransmissions share a Call-ID)."""
    seen: dict[str, str] = {}
    for m in phone.received():
        seen.setdefault(m.headers["call-id"], m.body.decode().split(": ", 1)[1])
    return list(seen.values())


async def test_a_burst_at_two_replicas_is_answered_once_and_sent_once(
    synapse: Synapse, sipp, people, bot: Account, deskbots, postgres: Postgres, tmp_path: Path
):
    phone = sipp(200)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    url = postgres.database()
    a, b = (
        replica(tmp_path, n, synapse, bot, alice, {"486": phone.uri()}, url, deskbots) for n in "ab"
    )
    a.start()
    b.start()
    texts = [f"burst {i}" for i in range(8)]
    commands = [await alice.say(room, f"!deskphone 486 {t}") for t in texts]
    for command in commands:
        await alice.reply_to(command)
    barrier = await alice.say(room, "!deskphone who 486")  # both have read past the burst
    await alice.reply_to(barrier)
    await alice.sync()
    for command in commands:
        [reply] = alice.replies_to(command)
        assert "✅ 486 (Reception): 200 OK" in text_of(reply), text_of(reply)
    wait_for(lambda: len(calls(phone)) >= len(texts), what=f"the phone's messages: {calls(phone)}")
    assert sorted(calls(phone)) == sorted(texts)
    owners = postgres.query(url.rsplit("/", 1)[1], "SELECT count(DISTINCT owner) FROM commands")
    assert int(owners[0][0]) >= 1
    health = [r.health()["store"] for r in (a, b)]
    assert {h["backend"] for h in health} == {"postgresql"}
    assert sorted(h["leads_clocks"] for h in health) == [False, True]
    assert health[0]["replica"] != health[1]["replica"]


async def test_a_replica_killed_mid_send_has_its_commands_answered_once_by_the_other(
    synapse: Synapse, sipp, people, bot: Account, deskbots, postgres: Postgres, tmp_path: Path
):
    fast, slow = sipp(200), sipp(200, delay_ms=4000)
    alice, room = await alice_in_a_room_with_the_bot(synapse, people, bot)
    url = postgres.database()
    db = url.rsplit("/", 1)[1]
    phones = {"486": fast.uri("486"), "487": slow.uri("487")}
    a, b = (replica(tmp_path, n, synapse, bot, alice, phones, url, deskbots) for n in "ab")
    a.start()
    b.start()
    texts = [f"evacuate {i}" for i in range(4)]
    commands = [await alice.say(room, f"!deskphone 486,487 {t}") for t in texts]
    wait_for(
        lambda: (
            len(calls(slow)) == len(texts)
            and int(postgres.query(db, "SELECT count(*) FROM commands")[0][0]) == len(texts)
        ),
        timeout=20,
        what="every command recorded and at the slow phone",
    )
    owner = postgres.query(db, "SELECT owner FROM commands ORDER BY id LIMIT 1")[0][0]
    ids = {r.health()["store"]["replica"]: r for r in (a, b)}
    dead, alive = ids[owner], next(r for r in (a, b) if r is not ids[owner])
    assert dead.proc is not None
    os.killpg(dead.proc.pid, signal.SIGKILL)  # deskbot and its SIP worker
    killed = time.monotonic()
    for command in commands:
        await alice.reply_to(command, timeout=LEASE + 15)
    answered_in = time.monotonic() - killed
    barrier = await alice.say(room, "!deskphone who 486")
    await alice.reply_to(barrier)
    await alice.sync()
    got = {"486": calls(fast), "487": calls(slow)}
    for ext, texts_got in got.items():
        assert len(texts_got) == len(set(texts_got)), f"{ext} got a text twice: {texts_got}"
    took_over = 0
    for command, text in zip(commands, texts, strict=True):
        [reply] = alice.replies_to(command)  # exactly once
        shown = text_of(reply)
        for ext, label in (("486", "Reception"), ("487", "Lab")):
            if f"✅ {ext} ({label}): 200 OK" in shown:  # said delivered: that phone has it
                assert text in got[ext]
        if "restarted while sending" in shown:
            took_over += 1
    assert took_over >= 1
    assert answered_in < LEASE + 5 + 4  # + the slow phone's answer for the living one's
    assert alive.health()["store"]["takeovers"] >= 1
