"""`deskbot run` with [slack], against the local Slack stand-in and SIPp phones.

Each test runs the installed command as an operator would, acts once as a
Slack user would (a slash command, a mention, a DM, a signed HTTP post) and
asserts what that user sees in Slack and what the phone received.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    DeskbotRun,
    desk_lines,
    free_port,
    http_get,
    ok_key,
    phone_got,
    phone_lines,
    run_deskbot,
    thanks_of,
    wait_for,
    write_config,
)
from slack_standin import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER_ID,
    SIGNING_SECRET,
    HttpAnswer,
    Posted,
    SlackStandIn,
    post_command,
)

from deskbot.sources.http import PER_PEER
from deskbot.sources.slack.wire import from_slack

ALICE, BOB, MALLORY, CAROL = "U0ALICE", "U0BOB", "U0MALLORY", "U0CAROL"
DESK, NOBOT, ELSEWHERE = "C0DESK", "C0NOBOT", "C0ELSEWHERE"


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    standin = SlackStandIn()
    yield standin
    standin.close()


@pytest.fixture
def deskbot(tmp_path: Path, slack: SlackStandIn) -> Iterator:
    """deskbot(phones, mode=..., senders=..., channels=..., extra=...) -> a running Deskbot.

    A phone is its URI, or (URI, format); ``extra`` holds more config lines, ``env`` more
    of deskbot's environment."""
    started: list[DeskbotRun] = []

    def start(
        phones: dict[str, str | tuple[str, str]],
        *,
        mode: str = "socket",
        senders: str = '["alice", "bob"]',
        channels: str = f'["{DESK}", "{NOBOT}"]',
        extra: list[str] = (),
        env: dict[str, str] | None = None,
    ) -> DeskbotRun:
        lines = [
            "[sip]",
            'listen = "127.0.0.1:0"',
            'from_uri = "sip:deskbot@127.0.0.1"',
            "timeout = 1.0",
            "[audit]",
            f'path = "{tmp_path / "audit.sqlite3"}"',
            "[health]",
            'listen = "127.0.0.1:0"',
            "[access]",
            f"senders = {senders}",
            'admins = ["alice"]',
            "[people.alice]",
            'name = "Alice Liddell"',
            'phone = "486"',
            f'slack = "{ALICE}"',
            "[people.bob]",
            f'slack = "{BOB}"',
            "[slack]",
            f'mode = "{mode}"',
            f'api_url = "{slack.api_url}"',
            f"channels = {channels}",
        ]
        env = {"SLACK_BOT_TOKEN": BOT_TOKEN, **(env or {})}
        if mode == "http":
            port = free_port(socket.SOCK_STREAM)
            lines.append(f'http_listen = "127.0.0.1:{port}"')
            env["SLACK_SIGNING_SECRET"] = SIGNING_SECRET
        else:
            env["SLACK_APP_TOKEN"] = APP_TOKEN
        for ext, phone in phones.items():
            uri, fmt = (phone, "") if isinstance(phone, str) else phone
            lines += phone_lines(ext, uri, fmt, label=f"Desk {ext}")
        lines += extra
        etc = tmp_path / "etc"  # deskbot watches the config's folder: keep logs and traces out
        etc.mkdir(exist_ok=True)
        cfg = write_config(etc / "deskbot.toml", "\n".join(lines) + "\n")
        bot = DeskbotRun(cfg, env, tmp_path / f"deskbot-{len(started)}.log").start()
        started.append(bot)
        if mode == "http":
            bot.url = f"http://127.0.0.1:{port}/slack/events"
            wait_for(lambda: bot.alive() and _accepts(port), what="deskbot's HTTP endpoint")
        else:
            wait_for(lambda: bot.alive() and slack.socket_open, what="deskbot's Socket Mode socket")
        return bot

    yield start
    for bot in started:
        bot.stop()
        log = bot.log()
        for secret in (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET):
            assert secret not in log, "a secret reached the log"


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def thread_of(slack: SlackStandIn, channel: str, replies: int = 1) -> tuple[Posted, list[Posted]]:
    """Wait for an anchor message in channel and its thread replies."""

    def found() -> tuple[Posted, list[Posted]] | None:
        for anchor in (p for p in slack.posts if p.channel == channel and not p.thread_ts):
            thread = [p for p in slack.posts if p.thread_ts == anchor.args["ts"]]
            if len(thread) >= replies:
                return anchor, thread
        return None

    return wait_for(found, what=f"an anchor and {replies} thread reply(ies) in {channel}")


def replies_to(slack: SlackStandIn, channel: str, ts: str) -> list[Posted]:
    return wait_for(
        lambda: [p for p in slack.posts if p.channel == channel and p.thread_ts == ts],
        what=f"a reply under {ts} in {channel}",
    )


def ack_of(slack: SlackStandIn, envelope_id: str):
    return wait_for(lambda: slack.acks.get(envelope_id), what=f"the ack of {envelope_id}")


def block_text(message: Posted) -> str:
    parts = []
    for block in message.blocks:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [e.get("text", "") for e in block.get("elements", [])]
    return "\n".join(parts)


def barrier(slack: SlackStandIn, phone) -> None:
    """A genuine command answered after the ones before it: whatever they would do is done.

    Afterwards the only anchor in the channel and the only text at the phone are its own.
    """
    slack.push_command("486 barrier", ALICE, DESK)
    _anchor, [reply] = thread_of(slack, DESK)
    assert "486 (Desk 486): 200 OK" in reply.text
    assert [p.text for p in slack.posts if not p.thread_ts] == [
        "Alice Liddell → 486 (Desk 486): barrier"
    ]
    assert [m.body for m in phone.wait_received(1)] == [b"Alice Liddell: barrier"]


# -- slash commands in Socket Mode ---------------------------------------------------------


def test_send_posts_who_sent_what_to_whom_and_the_phones_answer_in_its_thread(sipp, slack, deskbot):
    phone = sipp(200)
    bot = deskbot({"486": phone.uri("486")})
    envelope = slack.push_command("486 meeting moved to 3pm", ALICE, DESK)
    assert ack_of(slack, envelope).seconds < 3
    anchor, [reply] = thread_of(slack, DESK)
    assert anchor.text == "Alice Liddell → 486 (Desk 486): meeting moved to 3pm"
    assert "486 (Desk 486): 200 OK" in reply.text
    assert "200 OK" in block_text(reply)
    [msg] = phone.wait_received(1)
    assert msg.body == b"Alice Liddell: meeting moved to 3pm"
    assert "meeting moved" not in bot.log()  # message bodies stay out of the log


def test_ack_comes_at_once_while_a_silent_phone_keeps_the_send_waiting(sipp, slack, deskbot):
    deskbot({"486": sipp(silent=True).uri()})
    envelope = slack.push_command("486 are you there", ALICE, DESK)
    ack = ack_of(slack, envelope)
    _anchor, [reply] = thread_of(slack, DESK)
    assert "486 (Desk 486): 408 Request Timeout" in reply.text
    assert ack.at < reply.at  # acked while the phone kept the send waiting (1 s), not after
    assert ack.seconds < 3.0  # Slack's own limit; a slower ack only shows a busy machine
    assert "the phone is off, unplugged or unreachable" in reply.text


def test_group_send_reports_each_phone_with_code_reason_hint_and_a_summary(sipp, slack, deskbot):
    ok, missing = sipp(200), sipp(404)
    deskbot({"486": ok.uri("486"), "487": missing.uri("487")})
    slack.push_command("486,487 fire drill at 11", BOB, DESK)
    anchor, [reply] = thread_of(slack, DESK)
    assert "486 (Desk 486): 200 OK" in reply.text
    assert "487 (Desk 487): 404 Not Found — the phone has no identity 487" in reply.text
    assert reply.text.endswith("1/2 delivered")
    assert "*1/2 delivered*" in block_text(reply)
    assert reply.at - anchor.at > 0.9  # Slack's pace: one post per second per channel


def test_an_admin_probes_phones_from_slack_and_gets_who_answers_in_the_thread(sipp, slack, deskbot):
    up, wrong = sipp(200, method="OPTIONS"), sipp(404, method="OPTIONS")
    deskbot({"486": up.uri("486"), "487": wrong.uri("487")})
    slack.push_command("probe 486,487", ALICE, DESK)
    anchor, [reply] = thread_of(slack, DESK)
    assert anchor.text == "Alice Liddell probes 486 (Desk 486), 487 (Desk 487)"
    assert "486 (Desk 486): 200 OK" in reply.text
    assert "487 (Desk 487): 404 Not Found — the phone has no identity 487" in reply.text
    assert reply.text.endswith("1/2 phones answer")
    assert up.wait_received(1)[0].body == b""


def test_usage_error_is_shown_only_to_the_sender(sipp, slack, deskbot):
    phone = sipp(200)
    deskbot({"486": phone.uri()})
    envelope = slack.push_command("486", ALICE, DESK)
    answer = ack_of(slack, envelope).payload
    assert answer["response_type"] == "ephemeral"
    assert "nothing to send to 486" in answer["text"]
    assert answer["blocks"]
    help_answer = ack_of(slack, slack.push_command("help", ALICE, DESK)).payload
    assert help_answer["response_type"] == "ephemeral"
    assert "TARGETS TEXT" in help_answer["text"]
    barrier(slack, phone)  # asserts nothing but the barrier was posted or sent


def test_sender_outside_access_senders_is_refused_privately(sipp, slack, deskbot):
    phone = sipp(200)
    deskbot({"486": phone.uri()})
    answer = ack_of(slack, slack.push_command("486 let me in", MALLORY, DESK)).payload
    assert answer["response_type"] == "ephemeral"
    assert "you are not allowed to send to desk phones" in answer["text"]
    barrier(slack, phone)  # asserts nothing but the barrier was posted or sent


def test_channel_outside_the_allowed_list_is_refused_privately(sipp, slack, deskbot):
    phone = sipp(200)
    deskbot({"486": phone.uri()})
    answer = ack_of(slack, slack.push_command("486 hello", ALICE, ELSEWHERE)).payload
    assert answer["response_type"] == "ephemeral"
    assert "does not take commands in this channel" in answer["text"]
    barrier(slack, phone)  # asserts nothing but the barrier was posted or sent


def test_channel_the_bot_is_not_in_gets_the_result_through_response_url(sipp, slack, deskbot):
    slack.workspace.not_in_channel.add(NOBOT)
    deskbot({"486": sipp(200).uri()})
    slack.push_command("486 lunch is here", ALICE, NOBOT)
    [answer] = wait_for(lambda: [p for p in slack.responses.values() if p], what="response_url")
    [post] = answer
    assert post["response_type"] == "in_channel"
    assert post["text"].startswith("Alice Liddell → 486 (Desk 486): lunch is here\n")
    assert "486 (Desk 486): 200 OK" in post["text"]
    # the stand-in keeps only accepted posts: the calls show what deskbot tried in the channel
    tried = [args for method, args in slack.calls if method == "chat.postMessage"]
    assert [args["channel"] for args in tried] == [NOBOT]  # the anchor, refused; no reply tried
    assert "thread_ts" not in tried[0]


def test_rate_limited_post_is_retried_after_retry_after(sipp, slack, deskbot):
    slack.workspace.rate_limit_once.add("chat.postMessage")
    deskbot({"486": sipp(200).uri()})
    slack.push_command("486 retry me", ALICE, DESK)
    anchor, [reply] = thread_of(slack, DESK)
    assert slack.rate_limited == ["chat.postMessage"]
    assert anchor.text.endswith("retry me") and "200 OK" in reply.text


def test_socket_reconnects_after_disconnect_and_drop_without_losing_a_command(sipp, slack, deskbot):
    bot = deskbot({"486": sipp(silent=True).uri(), "487": sipp(200).uri("487")})
    ack_of(slack, slack.push_command("486 in flight", ALICE, DESK))
    slack.send_disconnect()  # Slack's warning before it closes the socket
    wait_for(lambda: slack.connections == 2 and slack.socket_open, what="a reconnect")
    _anchor, [reply] = thread_of(slack, DESK)  # acknowledged before the reconnect: still answered
    assert "486 (Desk 486): 408 Request Timeout" in reply.text
    slack.drop_sockets()
    wait_for(lambda: slack.connections == 3 and slack.socket_open, what="a reconnect after a drop")
    wait_for(lambda: bot.health()["chat"]["slack"]["connected"], what="healthz: slack connected")
    envelope = slack.push_command("487 after the drop", BOB, DESK)
    assert ack_of(slack, envelope).seconds < 3
    wait_for(lambda: any("487 (Desk 487): 200 OK" in p.text for p in slack.posts), what="answer")


def test_healthz_answers_503_while_slack_is_disconnected_and_200_once_it_is_back(
    sipp, slack, deskbot
):
    bot = deskbot({"486": sipp(200).uri()})
    status, health = bot.health_status()
    assert status == 200 and health["ok"] is True
    slack.workspace.socket_refused = True
    slack.drop_sockets()
    status, health = wait_for(
        lambda: (answer := bot.health_status())[0] == 503 and answer, what="healthz 503"
    )
    assert health["ok"] is False and health["chat"]["slack"]["connected"] is False
    slack.workspace.socket_refused = False
    wait_for(lambda: bot.health_status()[0] == 200, timeout=30, what="healthz 200 again")
    assert bot.health()["chat"]["slack"]["connected"] is True


def test_send_in_flight_at_shutdown_is_finished_before_deskbot_exits(sipp, slack, deskbot):
    bot = deskbot({"486": sipp(silent=True).uri()})
    ack_of(slack, slack.push_command("486 closing time", ALICE, DESK))
    assert bot.stop() == 0
    _anchor, [reply] = thread_of(slack, DESK)
    assert "486 (Desk 486): 408 Request Timeout" in reply.text


# -- mentions and DMs -----------------------------------------------------------------------


def test_mention_in_a_channel_is_answered_in_its_thread(sipp, slack, deskbot):
    phone = sipp(200)
    deskbot({"486": phone.uri()})
    ts = "1700000000.000100"
    slack.push_event(
        {
            "type": "app_mention",
            "user": ALICE,
            "text": f"<@{BOT_USER_ID}> 486 visitor at the front desk",
            "ts": ts,
            "channel": DESK,
        }
    )
    [reply] = replies_to(slack, DESK, ts)
    assert "486 (Desk 486): 200 OK" in reply.text
    assert phone.wait_received(1)[0].body == b"Alice Liddell: visitor at the front desk"


def test_an_event_slack_delivers_again_is_sent_and_answered_once(sipp, slack, deskbot):
    phone = sipp(200)
    bot = deskbot({"486": phone.uri()})
    ts = "1700000000.000200"
    event = {
        "type": "app_mention",
        "user": ALICE,
        "text": f"<@{BOT_USER_ID}> 486 fire drill now",
        "ts": ts,
        "channel": DESK,
    }
    slack.push_event(event, event_id="Ev0REDELIVER")
    [reply] = replies_to(slack, DESK, ts)
    ack_of(slack, slack.push_event(event, event_id="Ev0REDELIVER", retry_attempt=1))
    wait_for(lambda: "came in again" in bot.log(), what="the repeat to be recognised")
    assert [p.text for p in slack.posts if p.thread_ts == ts] == [reply.text]
    assert len(phone.received()) == 1


def test_a_slash_command_played_again_is_acknowledged_and_not_carried_out_again(
    sipp, slack, deskbot
):
    phone = sipp(200)
    bot = deskbot({"486": phone.uri()})
    fields = slack.command_fields("486 hello", ALICE, DESK)
    first = slack.push("slash_commands", fields)
    thread_of(slack, DESK)
    replayed = slack.push("slash_commands", dict(fields))
    assert ack_of(slack, first).seconds < 3 and ack_of(slack, replayed).seconds < 3
    wait_for(lambda: "came in again" in bot.log(), what="the repeat to be recognised")
    assert len(phone.received()) == 1
    assert len([p for p in slack.posts if p.channel == DESK and not p.thread_ts]) == 1


def test_direct_message_is_answered_in_its_thread_under_the_slack_display_name(
    sipp, slack, deskbot
):
    slack.workspace.users[CAROL] = {
        "id": CAROL,
        "name": "carol",
        "real_name": "Carol Danvers",
        "profile": {"display_name": "Carol D", "real_name": "Carol Danvers"},
    }
    phone = sipp(200)
    deskbot({"486": phone.uri()}, senders='"*"')
    ts = "1700000000.000200"
    slack.push_event(
        {
            "type": "message",
            "channel_type": "im",
            "user": CAROL,
            "text": "486 parcel for you",
            "ts": ts,
            "channel": "D0CAROL",
        }
    )
    [reply] = replies_to(slack, "D0CAROL", ts)
    assert "486 (Desk 486): 200 OK" in reply.text
    assert phone.wait_received(1)[0].body == b"Carol D: parcel for you"


def test_broken_config_edit_is_sent_to_admins_by_direct_message(sipp, slack, deskbot):
    bot = deskbot({"486": sipp(200).uri()})
    bot.config.write_text(bot.config.read_text().replace("[phones.486]", "[phones.486x]"))
    note = wait_for(
        lambda: [p for p in slack.posts if p.channel == "D0ALICE"], what="a DM to alice"
    )[0]
    assert note.text.startswith("deskbot: config change rejected")
    assert ("conversations.open", {"users": ALICE}) in slack.calls


# -- HTTP mode ---------------------------------------------------------------------------------


def test_http_mode_answers_a_signed_command_at_once_and_replies_in_thread(sipp, slack, deskbot):
    bot = deskbot({"486": sipp(silent=True).uri()}, mode="http")
    answer = post_command(bot.url, slack.command_fields("486 over http", ALICE, DESK))
    answered = time.monotonic()
    assert answer.status == 200 and answer.seconds < 3.0  # within Slack's limit
    _anchor, [reply] = thread_of(slack, DESK)
    assert "486 (Desk 486): 408 Request Timeout" in reply.text
    assert answered < reply.at  # answered before the phone's 408, 1 s later
    usage = post_command(bot.url, slack.command_fields("who", ALICE, DESK))
    assert usage.status == 200 and usage.json()["response_type"] == "ephemeral"
    assert bot.health()["chat"] == {"slack": {"connected": True}}


def test_http_mode_refuses_bad_signatures_and_stale_timestamps_with_401(sipp, slack, deskbot):
    phone = sipp(200)
    bot = deskbot({"486": phone.uri()}, mode="http")
    fields = slack.command_fields("486 forged", ALICE, DESK)
    assert post_command(bot.url, fields, secret="not-the-secret").status == 401
    altered = post_command(bot.url, fields, tamper=lambda b: b.replace(b"forged", b"FORGED"))
    assert altered.status == 401
    stale = post_command(bot.url, fields, timestamp=int(time.time()) - 6 * 60)
    assert stale.status == 401
    # a genuine command afterwards is the barrier: once its answer is in, any work from
    # the refused ones would be too
    genuine = post_command(bot.url, slack.command_fields("486 genuine", ALICE, DESK))
    assert genuine.status == 200
    anchor, _replies = thread_of(slack, DESK)
    assert [p.text for p in slack.posts if "orged" in p.text] == []
    assert [m.body.decode() for m in phone.received()] == ["Alice Liddell: genuine"]
    assert "genuine" in anchor.text


# -- Slack's escaped text -------------------------------------------------------------------


def test_mentions_stay_targets_but_read_as_names_on_the_phone():
    text = "<@U0ALICE|alice>,486 see <#C0DESK|desk> &amp; <https://x.example/a|x> &lt;3 <@U0BOB>"
    assert from_slack(text) == "<@U0ALICE|alice>,486 see #desk & https://x.example/a <3 @U0BOB"
    assert from_slack("who <@U0ALICE|alice>") == "who <@U0ALICE|alice>"
    assert from_slack("  help ") == "help"


def test_a_wrong_bot_token_stops_deskbot_with_a_clear_error_and_exit_2(slack, tmp_path):
    cfg = write_config(
        tmp_path / "deskbot.toml",
        f"""
        [sip]
        listen = "127.0.0.1:0"
        [health]
        listen = "127.0.0.1:0"
        [audit]
        path = "{tmp_path / "audit.sqlite3"}"
        [slack]
        api_url = "{slack.api_url}"
        """,
    )
    env = {"SLACK_BOT_TOKEN": "xoxb-wrong-token", "SLACK_APP_TOKEN": APP_TOKEN}
    result = run_deskbot("run", "-c", str(cfg), env=env, timeout=30)
    assert result.returncode == 2
    assert "Slack refused the bot token from $SLACK_BOT_TOKEN: invalid_auth" in result.stderr
    assert "xoxb-wrong-token" not in result.stderr + result.stdout


# -- hostile input over HTTP ---------------------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> HttpAnswer:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return HttpAnswer(response.status, response.read().decode(), 0.0)
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, exc.read().decode(), 0.0)


def test_unsigned_requests_get_short_answers_and_short_log_lines_never_their_bodies(
    sipp, slack, deskbot
):
    phone = sipp(200)
    bot = deskbot({"486": phone.uri()}, mode="http")
    big = b"text=" + b"x" * (1 << 20)
    assert _post(bot.url, big).status == 413
    forged = b"text=486+hi\r\n2026-01-01 ERROR deskbot: forged line&user_id=" + ALICE.encode()
    for _ in range(150):
        answer = _post(bot.url, forged, {"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status == 401
    assert _post(bot.url, b"\xff\xfe{not json", {"Content-Type": "application/json"}).status == 401
    genuine = post_command(bot.url, slack.command_fields("486 genuine", ALICE, DESK))
    assert genuine.status == 200
    thread_of(slack, DESK)
    log = bot.log()
    assert "forged line" not in log and "xxxx" not in log and "Traceback" not in log
    assert 1 <= log.count("rejected") <= 3  # one line per LOG_EVERY seconds, with a count
    assert len(phone.received()) == 1


def held_open(sockets: list[socket.socket]) -> int:
    """How many of these connections the other side still keeps open."""
    held = 0
    for s in sockets:
        try:
            held += s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            held += 1  # open, nothing to read
        except OSError:
            pass  # reset, or never connected
    return held


def test_a_thousand_half_open_connections_do_not_stop_a_genuine_command(sipp, slack, deskbot):
    phone = sipp(200)
    bot = deskbot({"486": phone.uri()}, mode="http")
    port = int(bot.url.split(":")[2].split("/")[0])
    lingering = []
    try:
        for _ in range(1024):  # slow-loris from another address: half a request, then silence
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            try:
                s.connect(("127.0.0.1", port))
                s.send(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass  # refused at the cap: what it is for
            lingering.append(s)
        genuine = post_command(bot.url, slack.command_fields("486 still here", ALICE, DESK))
        assert genuine.status == 200 and genuine.seconds < 3
        _anchor, [reply] = thread_of(slack, DESK)
        assert "200 OK" in reply.text
        # the listener holds at most its per-peer share of them; the rest were cut off
        wait_for(lambda: held_open(lingering) <= PER_PEER, what="the slow-loris cut off")
    finally:
        for s in lingering:
            s.close()
    assert bot.health()["ok"] is True


def test_slack_whose_signature_verified_before_gets_a_reserved_place_in_a_flood(
    sipp, slack, deskbot
):
    """Peers that signed a request before may use the listener's reserved places, as the
    API's clients with a good token do: a flood from 20 addresses fills the others."""
    phone = sipp(200)
    bot = deskbot({"486": phone.uri()}, mode="http")
    port = int(bot.url.split(":")[2].split("/")[0])
    assert post_command(bot.url, slack.command_fields("486 first", ALICE, DESK)).status == 200
    flood = []
    try:
        for i in range(1, 21):  # 20 peers x 14: more than the unreserved places
            for _ in range(14):
                s = socket.socket()
                s.bind((f"127.0.1.{i}", 0))
                s.connect(("127.0.0.1", port))
                flood.append(s)
        stranger = socket.socket()
        stranger.bind(("127.0.0.9", 0))
        stranger.connect(("127.0.0.1", port))
        stranger.settimeout(3)
        with contextlib.suppress(ConnectionResetError):  # closed (or reset) at once:
            assert stranger.recv(1) == b""  # no place left for a stranger
        genuine = post_command(bot.url, slack.command_fields("486 in a flood", ALICE, DESK))
        assert genuine.status == 200  # Slack signed before: a reserved place
    finally:
        for s in flood:
            s.close()
    wait_for(lambda: len(phone.received()) == 2, what="both texts")


def test_a_signed_command_replayed_within_the_window_is_carried_out_once(sipp, slack, deskbot):
    phone = sipp(200)
    bot = deskbot({"486": phone.uri()}, mode="http")
    fields = slack.command_fields("486 only once", ALICE, DESK)
    stamp = int(time.time())
    answers = [post_command(bot.url, fields, timestamp=stamp) for _ in range(3)]
    assert [a.status for a in answers] == [200, 200, 200]
    thread_of(slack, DESK)
    wait_for(lambda: bot.log().count("came in again") == 2, what="both replays recognised")
    assert len(phone.received()) == 1
    assert len([p for p in slack.posts if p.channel == DESK and not p.thread_ts]) == 1


def test_what_a_reply_echoes_cannot_ping_the_channel(sipp, slack, deskbot):
    deskbot({"486": sipp(200).uri()})
    envelope = slack.push_command("<!channel> hello", ALICE, DESK)
    payload = ack_of(slack, envelope).payload
    assert "<!channel>" not in payload["text"] and "&lt;!channel&gt;" in payload["text"]
    assert all("<!channel>" not in b["text"]["text"] for b in payload["blocks"])
    # the in-channel anchor of a genuine send echoes the text, and its thread the answer
    slack.push_command("486 <!channel> <!here> <@U0BOB> lunch", ALICE, DESK)
    anchor, [reply] = thread_of(slack, DESK)
    for post in (anchor, reply):
        shown = post.text + block_text(post)
        for ping in ("<!channel>", "<!here>", "<@U0BOB>"):
            assert ping not in shown, post
    assert anchor.text.endswith(": @channel @here @U0BOB lunch")  # readable, and no ping


def test_at_a_time_reads_the_senders_slack_time_zone(sipp, slack, deskbot):
    slack.workspace.users[ALICE] = {
        "id": ALICE,
        "name": "alice",
        "tz": "Pacific/Auckland",
        "profile": {"display_name": "Alice Liddell"},
    }
    deskbot({"486": sipp(200).uri()})
    envelope = slack.push_command("at 14:55 486 stand-up", ALICE, DESK)
    text = ack_of(slack, envelope).payload["text"]
    assert text.startswith("will send at 14:55 NZ") and "id 1" in text, text


# -- confirmations ---------------------------------------------------------------------------


def _confirming(sipp, deskbot, env: dict[str, str] | None = None) -> tuple:
    """A Snom phone 601 and a Yealink 602 with keys, [desk] on loopback, confirm_within 10 s."""
    snom, yealink = sipp(200, screen="snom-xml"), sipp(200, screen="yealink-xml")
    desk = free_port(socket.SOCK_STREAM)
    phones: dict[str, str | tuple[str, str]] = {"486": "sip:486@127.0.0.1:9"}  # alice's own
    phones |= {"601": (snom.uri("601"), "snom-xml"), "602": (yealink.uri("602"), "yealink-xml")}
    bot = deskbot(phones, extra=[*desk_lines(desk), "[message]", "confirm_within = 10"], env=env)
    return bot, snom, yealink


def _press(phone, fmt: str) -> str:
    """The person at the phone presses OK: the phone fetches the key's URL; the token."""
    url = ok_key(phone.wait_received(1)[0].body, fmt)
    status, page = http_get(url)
    assert status == 200 and "Thank you" in thanks_of(page, fmt)
    return url.rpartition("/")[2]


def test_a_confirm_slash_command_gets_each_press_and_who_did_not_in_its_thread(
    sipp, slack, deskbot
):
    bot, snom, yealink = _confirming(sipp, deskbot)
    slack.push_command("confirm 601,602 Fire drill", ALICE, DESK)
    anchor, [report] = thread_of(slack, DESK)
    assert "601 (Desk 601): 200 OK" in report.text and "602 (Desk 602): 200 OK" in report.text
    before = time.strftime("%H:%M")
    token = _press(snom, "snom-xml")
    assert ok_key(yealink.wait_received(1)[0].body, "yealink-xml")  # 602 has its key, unpressed
    clock = {before, time.strftime("%H:%M")}
    thread = anchor.args["ts"]
    _, confirmed = thread_of(slack, DESK, replies=2)
    assert confirmed[1].text in {f"601 Desk 601 confirmed at {c}" for c in clock}
    assert confirmed[1].thread_ts == report.thread_ts == thread
    assert confirmed[1].method == "chat.postMessage"  # in the thread for all, not ephemeral
    _, told = wait_for(lambda: thread_of(slack, DESK, replies=3), timeout=30, what="the summary")
    assert told[2].text == "1/2 confirmed; not confirmed: 602 Desk 602"
    assert told[2].thread_ts == thread
    assert [p for p in slack.posts if not p.thread_ts] == [anchor]  # no second anchor
    assert slack.ephemerals == []
    assert token not in bot.log() and "Fire drill" not in bot.log()


def test_a_confirm_mention_is_confirmed_in_the_mentions_thread(sipp, slack, deskbot):
    _, snom, _ = _confirming(sipp, deskbot)
    ts = "1700000000.000900"
    slack.push_event(
        {
            "type": "app_mention",
            "user": ALICE,
            "text": f"<@{BOT_USER_ID}> confirm 601 Fire drill",
            "ts": ts,
            "channel": DESK,
        }
    )
    [report] = replies_to(slack, DESK, ts)
    assert "601 (Desk 601): 200 OK" in report.text
    _press(snom, "snom-xml")
    confirmed = wait_for(
        lambda: [p for p in slack.posts if p.thread_ts == ts and "confirmed at" in p.text],
        what="the confirmation in the mention's thread",
    )
    assert [p.text.split(" at ")[0] for p in confirmed] == ["601 Desk 601 confirmed"]
    assert slack.ephemerals == []


def test_a_press_recorded_when_deskbot_is_killed_is_posted_once_after_the_restart(
    sipp, slack, deskbot
):
    failpoint = {"DESKBOT_FAILPOINT_TEST": "1", "DESKBOT_FAILPOINT": "before-confirm-post"}
    bot, snom, _ = _confirming(sipp, deskbot, failpoint)
    slack.push_command("confirm 601,602 Fire drill", ALICE, DESK)
    anchor, _ = thread_of(slack, DESK)
    thread = anchor.args["ts"]
    url = ok_key(snom.wait_received(1)[0].body, "snom-xml")
    with contextlib.suppress(OSError, http.client.HTTPException):  # the answer may die with it
        http_get(url)  # the press is recorded, then deskbot gets SIGKILL before it posts
    assert bot.proc is not None and bot.proc.wait(10) == -signal.SIGKILL

    def confirmations() -> list[Posted]:
        return [p for p in slack.posts if p.thread_ts == thread and "confirmed at" in p.text]

    assert confirmations() == []
    for name in failpoint:
        del bot.env[name]
    bot.start()  # the same config and audit log
    wait_for(confirmations, what="the confirmation after the restart")
    status, page = http_get(url)  # the phone asks again: thanked, nothing recorded anew
    assert status == 200 and "Thank you" in thanks_of(page, "snom-xml")
    assert bot.stop() == 0
    bot.start()  # and once more: nothing is left to post
    slack.push_command("601 barrier", ALICE, DESK)  # answered after any catch-up post
    barrier = wait_for(
        lambda: [p for p in slack.posts if not p.thread_ts and "barrier" in p.text],
        what="the barrier's anchor",
    )
    replies_to(slack, DESK, barrier[0].args["ts"])
    assert [p.text.split(" at ")[0] for p in confirmations()] == ["601 Desk 601 confirmed"]


def test_a_later_send_cancelled_in_chat_never_reaches_the_phone(sipp, slack, deskbot):
    phone = sipp(200)
    deskbot({"486": phone.uri("486")})
    later = slack.push_command("in 3s 486 lunch is off", ALICE, DESK)
    said = ack_of(slack, later).payload["text"]
    assert said.startswith("will send at ") and "id 1 (`cancel 1`)" in said, said
    cancel = slack.push_command("cancel 1", ALICE, DESK)
    assert ack_of(slack, cancel).payload["text"] == "cancelled send 1: 486 lunch is off"
    listed = slack.push_command("scheduled", ALICE, DESK)
    assert ack_of(slack, listed).payload["text"] == "nothing is scheduled (by anyone)"
    # a barrier: a later send due after the cancelled one's time, which does arrive
    barrier = slack.push_command("in 4s 486 after", ALICE, DESK)
    assert "id 2" in ack_of(slack, barrier).payload["text"]
    wait_for(lambda: phone_got(phone), timeout=30, what="the barrier's text")
    assert [m.body for m in phone_got(phone)] == [b"Alice Liddell: after"]
