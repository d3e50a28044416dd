"""Two `deskbot run` on one PostgreSQL with Slack Socket Mode: a connection each.

Slack gives each event to one of an app's connections and gives it again,
perhaps at the other, when it is not acknowledged in time; the stand-in here
gives the same event to both connections at once (the harder case of the
two). What the channel and the phone show is counted: each command answered
once, each text at the phone once (``phone_got``). A later send (`in 3s`) and a
schedule occurrence, with both replicas up, fire once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DeskbotRun, phone_got, wait_for, write_config
from postgres_server import PASSWORD, PASSWORD_ENV, Postgres
from slack_standin import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SlackStandIn

ALICE, DESK = "U0ALICE", "C0DESK"
LEASE = 2.0


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    standin = SlackStandIn()
    yield standin
    standin.close()


@pytest.fixture
def replicas(tmp_path: Path, slack: SlackStandIn, postgres: Postgres) -> Iterator:
    """replicas(phone_uri, extra="") -> (url, [a, b]): two deskbot run, one database."""
    started: list[DeskbotRun] = []

    def start(uri: str, extra: str = "", before=None) -> tuple[str, list[DeskbotRun]]:
        url = postgres.database()
        if before is not None:  # rows the replicas find at their start
            from deskbot.store.postgres import PostgresLog

            log = PostgresLog(url, PASSWORD)
            before(log)
            log.close()
        for name in ("a", "b"):
            folder = tmp_path / name / "etc"  # its own config path: its own replica id
            folder.mkdir(parents=True)
            text = f"""
                [sip]
                listen = "127.0.0.1:0"
                from_uri = "sip:deskbot@127.0.0.1"
                timeout = 2.0
                [audit]
                url = "{url}"
                password_env = "{PASSWORD_ENV}"
                lease = {LEASE}
                [health]
                listen = "127.0.0.1:0"
                [access]
                senders = ["alice"]
                admins = ["alice"]
                [people.alice]
                name = "Alice Liddell"
                slack = "{ALICE}"
                [slack]
                mode = "socket"
                api_url = "{slack.api_url}"
                channels = ["{DESK}"]
                [phones.486]
                uri = "{uri}"
                label = "Desk 486"
                """
            cfg = write_config(folder / "deskbot.toml", text + extra)
            env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}
            started.append(DeskbotRun(cfg, env, tmp_path / name / "run.log").start())
        wait_for(lambda: slack.connections >= 2 and slack.socket_open, what="two sockets")
        return url, started

    yield start
    for run in started:
        assert run.stop() == 0, run.log()[-2000:]


def mention(slack: SlackStandIn, text: str, ts: str) -> str:
    """Alice mentions the bot in the channel; both replicas' connections get the event."""
    event = {"type": "app_mention", "user": ALICE, "text": f"<@{BOT_USER_ID}> {text}"}
    return slack.push_event({**event, "ts": ts, "channel": DESK}, every=True)


def thread(slack: SlackStandIn, ts: str) -> list[str]:
    """What the channel shows under a message: replies, and answers only its sender sees."""
    shown = sorted([*slack.posts, *slack.ephemerals], key=lambda p: p.at)
    return [p.text for p in shown if p.channel == DESK and p.thread_ts == ts]


def texts(phone) -> list[str]:
    return [m.body.decode() for m in phone_got(phone)]


def settled(runs: list[DeskbotRun]) -> bool:
    """Both replicas have had a round: one leads the clocks, the other knows it does not."""
    return sorted(r.health()["store"]["leads_clocks"] for r in runs) == [False, True]


def test_an_event_given_to_both_socket_mode_connections_is_sent_and_answered_once(
    sipp, slack, replicas
):
    phone = sipp(200)
    _, runs = replicas(phone.uri())
    commands = {f"1700000000.00010{i}": f"fire drill {i}" for i in range(3)}
    for ts, text in commands.items():
        mention(slack, f"486 {text}", ts)
    mention(slack, "who 486", "1700000000.000200")  # sends nothing: answered once too
    for ts in [*commands, "1700000000.000200"]:
        wait_for(lambda ts=ts: thread(slack, ts), what=f"the reply under {ts}")
    wait_for(lambda: len(texts(phone)) >= len(commands), what="the phone's messages")
    wait_for(lambda: settled(runs), what="both replicas' first round")
    for ts in commands:
        [reply] = thread(slack, ts)
        assert "486 (Desk 486): 200 OK" in reply
    [who] = thread(slack, "1700000000.000200")
    assert "486" in who
    assert sorted(texts(phone)) == sorted(f"Alice Liddell: {t}" for t in commands.values())
    # the other connection got them too, and its replica stayed silent
    assert any("another replica" in r.log() or "came in again" in r.log() for r in runs)


def test_a_later_send_fires_once_with_both_replicas_up(sipp, slack, replicas):
    phone = sipp(200)
    _, runs = replicas(phone.uri())
    ts = "1700000000.000300"
    mention(slack, "in 3s 486 lunch is ready", ts)
    [planned] = wait_for(lambda: thread(slack, ts), what="the planned send's answer")
    assert planned.startswith("will send at") and "id 1" in planned, planned
    wait_for(lambda: texts(phone), timeout=15, what="the later send at the phone")
    wait_for(lambda: len(thread(slack, ts)) >= 2, what="the later send's report")
    wait_for(lambda: settled(runs), what="both replicas' rounds")
    [_, report] = thread(slack, ts)
    assert "486 (Desk 486): 200 OK" in report
    assert texts(phone) == ["Alice Liddell: lunch is ready"]


def test_a_schedule_occurrence_fires_once_with_both_replicas_up(sipp, slack, replicas):
    phone = sipp(200)

    def born_two_minutes_ago(log) -> None:  # the last minute's occurrence is due at start
        log.deferred_sends().mark("schedule-born:drill", time.time() - 120)

    schedule = '[schedules.drill]\ncron = "* * * * *"\ntargets = "486"\ntext = "drill now"\n'
    _, runs = replicas(phone.uri(), schedule, before=born_two_minutes_ago)
    wait_for(lambda: texts(phone), timeout=15, what="the occurrence at the phone")
    wait_for(lambda: settled(runs), what="both replicas' rounds")
    mention(slack, "486 barrier", "1700000000.000400")  # both go on reading after it
    wait_for(lambda: len(texts(phone)) >= 2, what="the barrier at the phone")
    assert texts(phone) == ["drill: drill now", "Alice Liddell: barrier"]
