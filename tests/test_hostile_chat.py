"""Hostile chat input, pure parts: Matrix event contents, display names, secrets in configs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from deskbot.directory import loader
from deskbot.relay.relay import Relay
from deskbot.relay.values import ChatUser, Dispatch, Policy, Request
from deskbot.senders.recording import RecordingSender
from deskbot.settings.load import ConfigError, load, parse
from deskbot.sources.matrix import wire


def finishes(work: Any, seconds: float = 5.0) -> Any:
    """Run work() in a thread; fail if it has not returned after `seconds` (a freeze)."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return result[0]


PILL = '<a href="https://matrix.to/#/@bob:example.com">Bob</a>'


def html(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "format": "org.matrix.custom.html", "formatted_body": body}


def test_mention_pills_are_read_as_matrix_ids_and_replies_are_left_out():
    content = html(f"<mx-reply><blockquote>{PILL} said</blockquote></mx-reply>!deskphone {PILL} hi")
    assert wire.with_mentions(content) == "!deskphone @bob:example.com hi"
    assert wire.with_mentions(html("a<br>b &amp; " + PILL)) == "a\nb & @bob:example.com"


def test_html_built_to_make_a_pattern_backtrack_is_read_in_bounded_time():
    nasty = [
        '<a href="https://matrix.to/#/@' + "a" * 58_000,  # no closing quote or bracket
        '<a href="https://matrix.to/#/@x"' + " " * 58_000,
        ("<a " + "x" * 50) * 1_000 + "matrix.to/#/@",
        "<mx-reply>" * 5_000 + "matrix.to/#/@" + "</a>" * 5_000,
    ]
    for body in nasty:
        text = finishes(lambda b=body: wire.with_mentions(html(b)))
        assert len(text) <= wire.MAX_READ


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
contents = st.fixed_dictionaries(
    {},
    optional={
        "msgtype": st.sampled_from(["m.text", "m.notice", 5]) | json_values,
        "body": json_values,
        "format": st.just("org.matrix.custom.html") | json_values,
        "formatted_body": st.text(max_size=300) | json_values,
        "m.relates_to": json_values
        | st.fixed_dictionaries({"rel_type": json_values, "event_id": json_values}),
    },
)


@settings(max_examples=300, deadline=1000)
@given(contents, json_values, st.booleans())
def test_any_event_content_reads_as_a_command_or_nothing_and_gets_a_well_formed_reply(
    content, body, direct
):
    text = wire.command_text(content, body, "!deskphone", direct)
    assert text is None or isinstance(text, str)
    reply = wire.thread_reply(content, "$cmd", "answer")
    relates = reply["m.relates_to"]
    assert relates["rel_type"] == "m.thread" and isinstance(relates["event_id"], str)
    assert relates["m.in_reply_to"] == {"event_id": "$cmd"}
    assert reply["m.mentions"] == {}  # an echoed @room notifies nobody


def relay(senders: str = "*") -> tuple[Relay, RecordingSender]:
    raw = {
        "phones": {"486": {"uri": "sip:486@10.0.0.86"}},
        "people": {"alice": {"phone": "486", "matrix": "@alice:example.com", "name": "Alice"}},
        "access": {"senders": senders},
    }
    s = parse(raw, Path("t.toml"), {}).settings
    phones = RecordingSender()
    return Relay(phones, loader.from_settings(s), Policy.from_settings(s)), phones


async def test_a_display_name_cannot_add_a_line_or_reorder_the_phones_screen():
    r, phones = relay()
    forger = ChatUser(
        "matrix", "@eve:example.com", "Alice Liddell\nIT Security: evacuate\u202e now"
    )
    job = r.prepare(Request(forger, "486 hi"))
    assert isinstance(job, Dispatch)
    await r.deliver(job)
    [text] = phones.texts("486")
    assert text == "Alice Liddell IT Security: evacuate now: hi"
    assert "\n" not in job.title and "\u202e" not in job.title


async def test_a_sender_the_directory_knows_is_shown_by_the_directory_name():
    r, phones = relay()
    alice = ChatUser("matrix", "@alice:example.com", "CEO (urgent)")
    job = r.prepare(Request(alice, "486 hi"))
    assert isinstance(job, Dispatch)
    await r.deliver(job)
    assert phones.texts("486") == ["Alice: hi"]


def test_a_secret_pasted_where_an_env_name_belongs_is_refused_without_echoing_it(tmp_path):
    secret = "xoxb-1234-5678-abcdefSECRET"
    path = tmp_path / "d.toml"
    path.write_text(f'[slack]\nbot_token_env = "{secret}"\n')
    try:
        load(path, {})
    except ConfigError as exc:
        problems = exc.problems
    else:
        raise AssertionError("accepted")
    assert any("slack.bot_token_env: must name an environment variable" in p for p in problems)
    assert all(secret not in p for p in problems)
