"""Crashes at the points of a command from Slack, the HTTP API and an Alertmanager webhook.

As in test_crash.py (Matrix), deskbot is killed for real (``DESKBOT_FAILPOINT``:
SIGKILL to deskbot and its SIP worker) and started again; the command then
comes in again as Slack's replay, a client's retry with its Idempotency-Key, or
Alertmanager's retry of the same notification. Each phone gets the text at
most once, and what the answer says of a phone matches what it got.
"""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    DeskbotRun,
    SippPhone,
    api_post,
    free_port,
    phone_got,
    wait_for,
    write_config,
)
from slack_standin import APP_TOKEN, BOT_TOKEN, SlackStandIn

ALICE, DESK = "U0ALICE", "C0DESK"
TOKEN = "ops-0123456789abcdef"
POINTS = ("after-record", "after-send")  # recorded, nothing sent / sent, nothing answered

AM_PAYLOAD = {
    "version": "4",
    "groupKey": '{}:{alertname="FreezerWarm"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "desks",
    "groupLabels": {"alertname": "FreezerWarm"},
    "commonLabels": {"alertname": "FreezerWarm"},
    "commonAnnotations": {"summary": "Freezer 2 at -12 °C"},
    "externalURL": "http://am:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "FreezerWarm"},
            "annotations": {"summary": "Freezer 2 at -12 °C"},
            "startsAt": "2026-11-26T08:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": "9f2c1a0b7e3d4c5a",
        }
    ],
}


class Front:
    """`deskbot run` with Slack (Socket Mode, the stand-in) and the HTTP API, one phone."""

    def __init__(self, tmp_path: Path, slack: SlackStandIn, phone: SippPhone):
        self.api_port = free_port()
        etc = tmp_path / "etc"
        etc.mkdir()
        cfg = write_config(
            etc / "deskbot.toml",
            f"""
            [sip]
            listen = "127.0.0.1:0"
            timeout = 3.0
            [audit]
            path = "{tmp_path / "audit.sqlite3"}"
            [health]
            listen = "127.0.0.1:0"
            [access]
            senders = ["alice"]
            [people.alice]
            name = "Alice Liddell"
            slack = "{ALICE}"
            [phones.486]
            uri = "{phone.uri("486")}"
            label = "Desk 486"
            [slack]
            mode = "socket"
            api_url = "{slack.api_url}"
            channels = ["{DESK}"]
            [api]
            listen = "127.0.0.1:{self.api_port}"
            [api.clients.ops]
            token_env = "OPS_TOKEN"
            """,
        )
        env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN, "OPS_TOKEN": TOKEN}
        self.run = DeskbotRun(cfg, env, tmp_path / "deskbot.log")
        self.slack = slack

    def start(self, failpoint: str = "") -> Front:
        self.run.env["DESKBOT_FAILPOINT"] = failpoint
        self.run.env["DESKBOT_FAILPOINT_TEST"] = "1"  # a test asks: armed
        connections = self.slack.connections
        self.run.start()
        wait_for(
            lambda: self.run.alive() and self.slack.connections > connections,
            what="deskbot's Socket Mode socket",
        )
        wait_for(lambda: self.slack.socket_open, what="the socket open")
        return self

    def killed(self) -> None:
        """Wait for the failpoint's SIGKILL."""
        proc = self.run.proc
        assert proc is not None
        wait_for(lambda: proc.poll() is not None, what="deskbot to be killed at the point")
        assert proc.returncode == -signal.SIGKILL

    def post(self, path: str, body: dict, headers: dict[str, str] | None = None):
        return api_post(self.api_port, TOKEN, path, body, headers)


@pytest.fixture
def front(tmp_path: Path, sipp) -> Iterator[tuple[Front, SippPhone]]:
    slack = SlackStandIn()
    phone = sipp(200)
    made = Front(tmp_path, slack, phone)
    yield made, phone
    made.run.stop()
    slack.close()


def thread_of(slack: SlackStandIn, channel: str):
    """The one anchor in channel and its thread, once the thread has a reply."""

    def found():
        for anchor in (p for p in slack.posts if p.channel == channel and not p.thread_ts):
            thread = [p for p in slack.posts if p.thread_ts == anchor.args["ts"]]
            if thread:
                return anchor, thread
        return None

    return wait_for(found, what=f"an anchor and its thread reply in {channel}")


@pytest.mark.parametrize("point", POINTS)
def test_a_slack_command_killed_at_a_point_and_replayed_reaches_the_phone_at_most_once(
    point, front
):
    bot, phone = front
    bot.start(point)
    fields = bot.slack.command_fields("486 evacuate by the stairs", ALICE, DESK)
    bot.slack.push("slash_commands", fields)
    bot.killed()

    bot.start()
    bot.slack.push("slash_commands", dict(fields))  # the same trigger_id: a replay
    wait_for(lambda: "came in again" in bot.run.log(), what="the replay recognised")
    private = bot.slack.responses[fields["response_url"].rsplit("/", 1)[1]]
    [answer] = wait_for(lambda: private, what="the replay answered through response_url")
    bot.slack.push_command("486 barrier", ALICE, DESK)  # a genuine command after the replay
    _anchor, [barrier] = thread_of(bot.slack, DESK)
    assert "486 (Desk 486): 200 OK" in barrier.text

    got = [m.body for m in phone_got(phone)]
    if point == "after-record":  # recorded, killed before any MESSAGE left
        assert got == [b"Alice Liddell: barrier"]
        assert "486 (Desk 486): no answer — deskbot or its SIP agent restarted" in answer["text"]
    else:  # the phone has it; the replay does not send it again, and says it took it
        assert got == [b"Alice Liddell: evacuate by the stairs", b"Alice Liddell: barrier"]
        assert "486 (Desk 486): 200 OK" in answer["text"]
    assert len(private) == 1  # answered once


@pytest.mark.parametrize("point", POINTS)
def test_an_api_send_killed_at_a_point_and_retried_with_its_key_is_told_what_the_phone_got(
    point, front
):
    bot, phone = front
    bot.start(point)
    once = {"Idempotency-Key": "deploy-4711"}
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # deskbot died mid-request
        bot.post("/v1/send", {"targets": "486", "text": "deploy done"}, once)
    bot.killed()

    bot.start()
    status, body = bot.post("/v1/send", {"targets": "486", "text": "deploy done"}, once)

    assert status == 200, body
    [delivery] = body["deliveries"]
    got = [m.body for m in phone_got(phone)]
    if point == "after-record":
        assert got == []  # recorded, never sent, and the retry does not send it late
        assert (delivery["code"], delivery["outcome"]) == (0, "unconfirmed")
    else:
        assert got == [b"ops: deploy done"]
        assert (delivery["code"], delivery["reason"]) == (200, "OK")
    status, _ = bot.post("/v1/send", {"targets": "486", "text": "next"})
    assert status == 200
    assert [m.body for m in phone_got(phone)] == [*got, b"ops: next"]


@pytest.mark.parametrize("point", POINTS)
def test_an_alertmanager_webhook_killed_at_a_point_and_retried_sends_at_most_once(point, front):
    bot, phone = front
    bot.start(point)
    if point == "after-record":  # killed before the answer
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            bot.post("/v1/alertmanager?targets=486", AM_PAYLOAD)
    else:  # answered once recorded; killed once the phone answered
        assert bot.post("/v1/alertmanager?targets=486", AM_PAYLOAD)[0] == 202
    bot.killed()

    bot.start()
    status, body = bot.post("/v1/alertmanager?targets=486", AM_PAYLOAD)  # Alertmanager's retry

    assert (status, body) == (200, {"status": "duplicate"})
    status, _ = bot.post("/v1/send", {"targets": "486", "text": "barrier"})
    assert status == 200
    alert = b"ops: FIRING: FreezerWarm: Freezer 2 at -12 \xc2\xb0C"
    got = [m.body for m in phone_got(phone)]
    if point == "after-record":  # at most once: recorded, so the retry is not sent late
        assert got == [b"ops: barrier"]
    else:
        assert got == [alert, b"ops: barrier"]
