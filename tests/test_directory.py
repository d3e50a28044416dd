"""Target resolution and the command grammar: pure functions, tested without sockets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskbot import commands, config
from deskbot.directory import Directory, TargetError, loader

DIRECTORY = """
[phones.486]
uri = "sip:486@10.0.0.86"
label = "Reception"
[phones.487]
uri = "sip:487@10.0.0.87"
[phones.488]
uri = "sip:488@10.0.0.88"
[people.alice]
phone = "486"
slack = "U024BE7LH"
matrix = "@alice:example.com"
[people.bob]
phone = "488"
[people.carol]
[groups.sales]
members = ["alice", "487"]
[groups.all]
members = ["@sales", "bob", "486"]
"""


def directory(extra: str = "") -> Directory:
    text = DIRECTORY + extra
    return loader.from_settings(
        config.parse(tomllib.loads(text), Path("x"), {"P": "secret"}).settings
    )


def extensions(token: str, d: Directory | None = None) -> list[str]:
    return [p.extension for p in (d or directory()).resolve(token).phones]


def test_extension_person_group_and_mentions_resolve():
    assert extensions("486") == ["486"]
    assert extensions("alice") == ["486"]
    assert extensions("Alice") == ["486"]
    assert extensions("@sales") == ["486", "487"]
    assert extensions("sales") == ["486", "487"]
    assert extensions("<@U024BE7LH>") == ["486"]
    assert extensions("<@U024BE7LH|alice>") == ["486"]
    assert extensions("@alice:example.com") == ["486"]


def test_comma_list_collapses_duplicates_in_written_order():
    assert extensions("488,alice,@sales,486") == ["488", "486", "487"]
    assert extensions("@all") == ["486", "487", "488"]


def test_unknown_parts_are_named():
    d = directory()
    with pytest.raises(TargetError, match="unknown target 'dave'"):
        d.resolve("486,dave")
    with pytest.raises(TargetError, match="extension 999 is not in the directory"):
        d.resolve("999")
    with pytest.raises(TargetError, match="no group '@nope'"):
        d.resolve("@nope")
    with pytest.raises(TargetError, match="carol has no desk phone"):
        d.resolve("carol")
    with pytest.raises(TargetError, match="empty target"):
        d.resolve("486,,487")
    with pytest.raises(TargetError, match="not in the directory"):
        d.resolve("<@U999999>")


def test_unlisted_extensions_need_a_registrar_domain():
    d = directory(
        '[sip.registrar]\nuri = "sip:pbx.example.com"\nusername = "u"\n'
        'password_env = "P"\ndomain = "pbx.example.com"\n'
    )
    [phone] = d.resolve("4711").phones
    assert phone.uri == "sip:4711@pbx.example.com"


def test_unlisted_extensions_take_the_fleet_format():
    d = directory(
        '[message]\nformat = "snom-infobox"\n'
        '[sip.registrar]\nuri = "sip:pbx.example.com"\nusername = "u"\n'
        'password_env = "P"\ndomain = "pbx.example.com"\n'
    )
    [phone] = d.resolve("4711").phones
    assert (phone.uri, phone.format) == ("sip:4711@pbx.example.com", "snom-infobox")


def test_group_summary_is_wanted_for_groups():
    assert directory().resolve("@sales").groups == ("sales",)
    assert directory().resolve("486").groups == ()


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_resolver_raises_only_target_errors_and_never_builds_uris_from_text(token: str):
    d = directory(
        '[sip.registrar]\nuri = "sip:pbx.example.com"\nusername = "u"\n'
        'password_env = "P"\ndomain = "pbx.example.com"\n'
    )
    try:
        resolution = d.resolve(token)
    except TargetError:
        return
    known = {p.uri for p in d.phones.values()}
    for phone in resolution.phones:
        assert phone.uri in known or (
            phone.extension.isdigit()
            and phone.extension.isascii()
            and phone.uri == f"sip:{phone.extension}@pbx.example.com"
        )


def test_grammar():
    assert commands.parse("help") == commands.Help()
    assert commands.parse("who @sales") == commands.Who("@sales")
    assert commands.parse("history") == commands.History(False)
    assert commands.parse("history all") == commands.History(True)
    assert commands.parse("486  meeting   moved ") == commands.Send("486", "meeting   moved")
    assert commands.parse("486 line one\nline two") == commands.Send("486", "line one\nline two")


def test_grammar_errors_say_what_to_type():
    with pytest.raises(commands.UsageError, match="usage: TARGETS TEXT"):
        commands.parse("   ")
    with pytest.raises(commands.UsageError, match="nothing to send to 486"):
        commands.parse("486")
    with pytest.raises(commands.UsageError, match="who TARGET"):
        commands.parse("who")
    with pytest.raises(commands.UsageError, match="history all"):
        commands.parse("history everything")


def test_control_characters_are_dropped_from_the_text():
    assert commands.parse("486 a\x00b\x1b[31mc\u202ed\r\ne").text == "ab[31mcd\ne"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_parser_raises_only_usage_errors(text: str):
    try:
        command = commands.parse(text)
    except commands.UsageError:
        return
    if isinstance(command, commands.Send):
        assert command.text and "\r" not in command.text and "\x00" not in command.text
