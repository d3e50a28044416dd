"""Config validation: every problem is one line, 'PATH: key.path: what is wrong'."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from deskbot import config

ROOT = Path(__file__).parent.parent
ENV = {"DESKBOT_MATRIX_TOKEN": "t", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}

BASE = """
[sip]
listen = "127.0.0.1:0"
from_uri = "sip:deskbot@127.0.0.1"
[phones.486]
uri = "sip:486@10.0.0.86"
label = "Reception"
[phones.487]
uri = "sip:487@10.0.0.87:5060"
[people.alice]
phone = "486"
slack = "U024BE7LH"
matrix = "@alice:example.com"
[groups.sales]
members = ["alice", "487"]
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    try:
        config.parse(tomllib.loads(text), Path("deskbot.toml"), env if env is not None else ENV)
    except config.ConfigError as exc:
        return exc.problems
    return []


def test_the_example_config_is_valid_and_defaults_match_the_contract():
    cfg = config.load(ROOT / "config.example.toml", ENV)
    s = cfg.settings
    assert (s.sip.timeout, s.sip.max_in_flight) == (6.0, 50)
    assert (s.message.max_chars, s.message.sender_prefix) == (160, True)
    assert (
        s.limits.per_sender_per_minute,
        s.limits.per_phone_per_minute,
        s.limits.max_group_size,
    ) == (20, 10, 50)
    assert s.slack and s.slack.mode == "socket" and s.matrix and s.matrix.command == "!deskphone"


def test_defaults_apply_when_keys_are_left_out():
    s = config.parse({}, Path("x.toml"), {}).settings
    assert s.sip.timeout == 6.0 and s.access.senders == "*" and s.health.listen == "127.0.0.1:9120"
    assert s.slack is None and s.matrix is None


def test_unknown_key_names_file_and_key_path():
    assert problems(BASE + "[message]\nmax_char = 10\n") == [
        "deskbot.toml: message.max_char: unknown key (check the spelling against "
        "config.example.toml)"
    ]


def test_wrong_type_is_reported_with_its_key():
    [line] = problems(BASE.replace('listen = "127.0.0.1:0"', "listen = 5070"))
    assert line.startswith("deskbot.toml: sip.listen: ")


def test_person_phone_that_does_not_exist():
    assert problems(BASE.replace('phone = "486"', 'phone = "999"')) == [
        "deskbot.toml: people.alice.phone: phone '999' is not in [phones]"
    ]


def test_group_member_that_does_not_exist():
    assert problems(BASE.replace('members = ["alice", "487"]', 'members = ["bob"]')) == [
        "deskbot.toml: groups.sales.members[0]: 'bob' is not a phone, person or group"
    ]


def test_duplicate_chat_id():
    text = BASE + '[people.bob]\nphone = "487"\nslack = "U024BE7LH"\n'
    assert problems(text) == [
        "deskbot.toml: people.bob.slack: 'U024BE7LH' is already used by 'alice'"
    ]


def test_group_cycle():
    text = BASE + '[groups.a]\nmembers = ["@b"]\n[groups.b]\nmembers = ["@a", "486"]\n'
    found = problems(text)
    assert "deskbot.toml: groups.a.members: group cycle: a -> b -> a" in found


def test_invalid_sip_uri_and_header_smuggling_are_refused():
    for bad in (
        "http://x",
        "sip:486@10.0.0.86?X-Injected=1",
        "sip:486@host name",
        "sip:<486>@x",
        "sip:486@10.0.0.86\r\nX: 1",
    ):
        [line] = problems(BASE.replace('"sip:486@10.0.0.86"', repr(bad).replace("'", '"')))
        assert line.startswith("deskbot.toml: phones.486.uri: "), line
        assert "not a valid sip: URI" in line


def test_missing_env_variable_for_a_secret():
    text = BASE + '[matrix]\nhomeserver = "http://127.0.0.1:8008"\nuser_id = "@bot:x.org"\n'
    assert problems(text, env={}) == [
        "deskbot.toml: matrix.access_token_env: environment variable DESKBOT_MATRIX_TOKEN "
        "is not set"
    ]


def test_extension_keys_must_be_digits():
    text = BASE + '[phones.abc]\nuri = "sip:1@10.0.0.1"\n'
    assert problems(text) == [
        "deskbot.toml: phones.abc: the key must be an extension of digits, like 486"
    ]


def test_every_problem_is_reported_at_once():
    text = BASE.replace('phone = "486"', 'phone = "999"') + "[limits]\nmax_group_size = 0\n"
    found = problems(text)
    assert any(p.startswith("deskbot.toml: limits.max_group_size: ") for p in found)
    # cross-references are checked only once the types are right
    assert len(found) == 1


def test_senders_and_admins_must_be_people():
    text = BASE + '[access]\nsenders = ["alice", "mallory"]\nadmins = ["eve"]\n'
    assert problems(text) == [
        "deskbot.toml: access.senders[1]: 'mallory' is not in [people]",
        "deskbot.toml: access.admins[0]: 'eve' is not in [people]",
    ]


def test_bad_toml_and_missing_file(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(bad, {})
    assert err.value.problems[0].startswith(f"{bad}: not valid TOML: ")
    with pytest.raises(config.ConfigError) as err:
        config.load(tmp_path / "none.toml", {})
    assert "file not found" in err.value.problems[0]


def test_slack_api_url_gets_its_trailing_slash():
    text = BASE + '[slack]\napi_url = "http://127.0.0.1:9/api"\n'
    cfg = config.parse(tomllib.loads(text), Path("x"), ENV)
    assert cfg.settings.slack and cfg.settings.slack.api_url == "http://127.0.0.1:9/api/"


def test_a_phone_transport_must_match_the_sip_transport():
    text = BASE.replace('"sip:486@10.0.0.86"', '"sip:486@10.0.0.86;transport=tcp"')
    assert problems(text) == [
        "deskbot.toml: phones.486.uri: asks for transport=tcp but deskbot listens on udp "
        "([sip] transport)"
    ]


def test_a_phone_format_defaults_to_the_fleet_format_and_a_wrong_one_names_its_key():
    from deskbot.directory import loader

    raw = {
        "message": {"format": "snom-infobox"},
        "phones": {
            "486": {"uri": "sip:486@10.0.0.86"},
            "487": {"uri": "sip:487@10.0.0.87", "format": "message"},
        },
    }
    directory = loader.from_settings(config.parse(raw, Path("x.toml"), {}).settings)
    assert [(p.extension, p.format) for p in directory.phones.values()] == [
        ("486", "snom-infobox"),
        ("487", "message"),
    ]
    assert config.parse({}, Path("x.toml"), {}).settings.message.format == "message"
    [problem] = problems('[phones.486]\nuri = "sip:486@10.0.0.86"\nformat = "infobox"\n')
    assert problem.startswith("deskbot.toml: phones.486.format: ")
    assert "'message' or 'snom-infobox'" in problem
