"""What a new admin runs into: refusals that say what to do, the Makefile, the package metadata."""

from __future__ import annotations

import tomllib
from pathlib import Path

from deskbot import config
from deskbot.directory import loader
from deskbot.relay import Answer, ChatUser, Policy, Relay, Request
from deskbot.senders.recording import RecordingSender

ROOT = Path(__file__).parent.parent

DIRECTORY = """
[access]
senders = ["alice"]
[phones.486]
uri = "sip:486@10.0.0.86"
[people.alice]
phone = "486"
slack = "U0ALICE"
[people.bob]
phone = "486"
"""


def test_a_sender_who_is_not_allowed_is_told_both_entries_an_admin_must_add():
    s = config.parse(tomllib.loads(DIRECTORY), Path("x"), {}).settings
    relay = Relay(RecordingSender(), loader.from_settings(s), Policy.from_settings(s))
    answer = relay.prepare(Request(ChatUser("slack", "U0MALLORY"), "486 let me in"))
    assert answer == Answer(
        "you are not allowed to send to desk phones: ask an admin to add you to [people] "
        "with your Slack id U0MALLORY, and to [access] senders",
        error=True,
    )
    answer = relay.prepare(Request(ChatUser("matrix", "@m:example.com"), "486 hi"))
    assert isinstance(answer, Answer) and "with your Matrix id @m:example.com," in answer.text
