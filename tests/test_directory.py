"""Target resolution and the command grammar: pure functions, tested without sockets."""

from __future__ import annotations

import time
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskbot.directory import loader
from deskbot.directory.snapshot import Directory, TargetError
from deskbot.relay import grammar
from deskbot.settings.checks import cross_check
from deskbot.settings.load import parse, validate
from deskbot.settings.schema import Group

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
    return loader.from_settings(parse(tomllib.loads(text), Path("x"), {"P": "secret"}).settings)


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
    assert grammar.parse("help") == grammar.Help()
    assert grammar.parse("who @sales") == grammar.Who("@sales")
    assert grammar.parse("history") == grammar.History(False)
    assert grammar.parse("history all") == grammar.History(True)
    assert grammar.parse("486  meeting   moved ") == grammar.Send("486", "meeting   moved")
    assert grammar.parse("486 line one\nline two") == grammar.Send("486", "line one\nline two")


def test_grammar_errors_say_what_to_type():
    with pytest.raises(grammar.UsageError, match="usage: TARGETS TEXT"):
        grammar.parse("   ")
    with pytest.raises(grammar.UsageError, match="nothing to send to 486"):
        grammar.parse("486")
    with pytest.raises(grammar.UsageError, match="who TARGET"):
        grammar.parse("who")
    with pytest.raises(grammar.UsageError, match="history all"):
        grammar.parse("history everything")


def test_control_characters_are_dropped_from_the_text():
    assert grammar.parse("486 a\x00b\x1b[31mc\u202ed\r\ne").text == "ab[31mcd\ne"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_parser_raises_only_usage_errors(text: str):
    try:
        command = grammar.parse(text)
    except grammar.UsageError:
        return
    if isinstance(command, grammar.Send):
        assert command.text and "\r" not in command.text and "\x00" not in command.text


def test_every_unknown_target_in_a_list_is_named_in_one_message():
    d = directory()
    with pytest.raises(TargetError) as err:
        d.resolve("486,dave,999,erin,@nope,dave")
    assert str(err.value) == (
        "unknown targets 'dave', 'erin': not extensions, people or groups; "
        "extension 999 is not in the directory; no group '@nope': try `help` for the groups; "
        "try `who` or `help`"
    )
    with pytest.raises(TargetError) as err:
        d.resolve("486,dave")
    assert str(err.value) == (
        "unknown target 'dave': not an extension, person or group; try `who` or `help`"
    )


def groups_directory(groups: dict[str, list[str]]) -> Directory:
    """The directory's phones and people with these groups, cycles and all (not validated)."""
    base = validate(tomllib.loads(DIRECTORY.split("[groups.sales]")[0]), Path("x"))
    members = {name: Group(members=list(ms)) for name, ms in groups.items()}
    return loader.from_settings(replace(base, groups=members))


def test_a_chain_of_1200_groups_and_26_levels_of_diamonds_resolve_at_once():
    chain = {f"g{i}": [f"@g{i + 1}"] for i in range(1199)} | {"g1199": ["487"]}
    assert extensions("@g0", groups_directory(chain)) == ["487"]
    diamonds = {"top": ["@a1", "@b1"]}
    for i in range(1, 27):
        below = [f"@a{i + 1}", f"@b{i + 1}"] if i < 26 else ["486", "bob"]
        diamonds |= {f"a{i}": below, f"b{i}": below}
    started = time.monotonic()
    assert extensions("top,@a3,a26", groups_directory(diamonds)) == ["486", "488"]
    assert time.monotonic() - started < 20  # only the exponential walk (2^26 paths) fails


def expand_recursively(d: Directory, name: str, seen: set[str]) -> list[str]:
    """The resolver as it was, recursive: the order phones come out in is the contract."""
    seen.add(name)
    found: list[str] = []
    for member in d.groups[name]:
        ref = member.removeprefix("@")
        if member in d.phones:
            found.append(member)
        elif ref in d.groups:
            if ref not in seen:
                found += expand_recursively(d, ref, seen)
        elif ref in d.people and d.people[ref].phone:
            found.append(str(d.people[ref].phone))
    return list(dict.fromkeys(found))


NAMES = ["a", "b", "c", "d", "e"]
GRAPHS = st.dictionaries(
    st.sampled_from(NAMES),
    st.lists(st.sampled_from([*(f"@{n}" for n in NAMES), "486", "487", "488", "alice"])),
    min_size=1,
)


@settings(max_examples=300, deadline=None)
@given(GRAPHS)
def test_groups_resolve_like_the_recursive_walk_and_cycles_are_found_like_a_topological_sort(
    graph: dict[str, list[str]],
):
    graph = {
        name: [m for m in members if not m.startswith("@") or m[1:] in graph]
        for name, members in graph.items()
    }
    d = groups_directory(graph)
    for name in graph:
        assert extensions(f"@{name}", d) == expand_recursively(d, name, set())
    # Kahn: a graph without cycles can be emptied by removing groups nobody contains
    inside = {n: {m[1:] for m in ms if m.startswith("@")} for n, ms in graph.items()}
    while leaves := [n for n, kids in inside.items() if not kids]:
        inside = {n: kids - set(leaves) for n, kids in inside.items() if n not in leaves}
    settings_ = replace(
        validate(tomllib.loads(DIRECTORY.split("[groups.sales]")[0]), Path("x")),
        groups={n: Group(members=ms) for n, ms in graph.items()},
    )
    cycles = [msg for key, msg in cross_check(settings_) if "group cycle" in msg]
    assert bool(cycles) == bool(inside)
