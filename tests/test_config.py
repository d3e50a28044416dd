"""Config validation: every problem is one line, 'PATH: key.path: what is wrong'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskbot.settings.load import ConfigError, load, parse

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
        parse(tomllib.loads(text), Path("deskbot.toml"), env if env is not None else ENV)
    except ConfigError as exc:
        return exc.problems
    return []


def test_the_example_config_is_valid_and_defaults_match_the_contract():
    cfg = load(ROOT / "config.example.toml", ENV)
    s = cfg.settings
    assert (s.sip.timeout, s.sip.max_in_flight) == (6.0, 50)
    assert (s.message.max_chars, s.message.sender_prefix) == (160, True)
    assert (
        s.limits.per_sender_per_minute,
        s.limits.per_phone_per_minute,
        s.limits.max_group_size,
    ) == (20, 10, 50)
    assert s.slack is None and s.matrix is None  # commented out: a copy passes as shipped
    example = (ROOT / "config.example.toml").read_text()
    block = example[example.index("# [matrix]") : example.index("# Optional: prepared texts.")]
    lines = [ln.removeprefix("# ") for ln in block.splitlines() if not ln.startswith("# Slack:")]
    chats = parse(tomllib.loads("\n".join(lines)), Path("x.toml"), ENV).settings
    assert chats.slack and chats.slack.mode == "socket" and chats.matrix
    assert chats.matrix.command == "!deskphone"


def test_a_copy_of_the_example_config_passes_check_config_as_shipped(tmp_path):
    copy = tmp_path / "config.toml"
    copy.write_text((ROOT / "config.example.toml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DESKBOT_"))}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "deskbot"), "check-config", "-c", str(copy)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_defaults_apply_when_keys_are_left_out():
    s = parse({}, Path("x.toml"), {}).settings
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
    wrong_types = (
        "[limits]\nmax_group_size = 0\nper_sender_per_minute = -1\n[message]\nmax_chars = 0\n"
    )
    text = BASE.replace('phone = "486"', 'phone = "999"') + wrong_types
    # every type problem at once; cross-references are checked only once the types are right
    assert problems(text) == [
        "deskbot.toml: message.max_chars: Input should be greater than or equal to 1",
        "deskbot.toml: limits.per_sender_per_minute: Input should be greater than or equal to 1",
        "deskbot.toml: limits.max_group_size: Input should be greater than or equal to 1",
    ]
    # and every cross-reference problem at once
    text = BASE.replace('phone = "486"', 'phone = "999"') + '[access]\nsenders = ["mallory"]\n'
    assert problems(text) == [
        "deskbot.toml: people.alice.phone: phone '999' is not in [phones]",
        "deskbot.toml: access.senders[0]: 'mallory' is not in [people]",
    ]


def test_senders_and_admins_must_be_people():
    text = BASE + '[access]\nsenders = ["alice", "mallory"]\nadmins = ["eve"]\n'
    assert problems(text) == [
        "deskbot.toml: access.senders[1]: 'mallory' is not in [people]",
        "deskbot.toml: access.admins[0]: 'eve' is not in [people]",
    ]


def test_bad_toml_and_missing_file(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip\n")
    with pytest.raises(ConfigError) as err:
        load(bad, {})
    assert err.value.problems[0].startswith(f"{bad}: not valid TOML: ")
    with pytest.raises(ConfigError) as err:
        load(tmp_path / "none.toml", {})
    assert "file not found" in err.value.problems[0]


def test_slack_api_url_gets_its_trailing_slash():
    text = BASE + '[slack]\napi_url = "http://127.0.0.1:9/api"\n'
    cfg = parse(tomllib.loads(text), Path("x"), ENV)
    assert cfg.settings.slack and cfg.settings.slack.api_url == "http://127.0.0.1:9/api/"


def test_a_phone_transport_must_match_the_sip_transport():
    text = BASE.replace('"sip:486@10.0.0.86"', '"sip:486@10.0.0.86;transport=tcp"')
    assert problems(text) == [
        "deskbot.toml: phones.486.uri: asks for transport=tcp but deskbot listens on udp "
        "([sip] transport)"
    ]


# -- any file: exit 0 or 2 and clean lines, never a traceback or a hang ---------------------


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """`deskbot check-config -c PATH` in-process -> (exit code, the lines it printed)."""
    from deskbot.cli import commands as cli

    code = cli.main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out.splitlines()


def assert_clean(path: Path, code: int, lines: list[str]) -> None:
    assert code in (0, 2)
    assert lines, "check-config printed nothing"
    if code == 0:
        [line] = lines
        assert line.startswith(f"{path}: ok: ")
    for line in lines:
        assert line.startswith(f"{path}: ") and line.isprintable() and len(line) < 2000, line


def test_an_integer_over_pythons_digit_limit_is_one_problem_line(tmp_path, capsys):
    path = tmp_path / "d.toml"
    path.write_text(BASE + "[limits]\nmax_group_size = 1" + "0" * 5000 + "\n")
    assert check_config(path, capsys) == (
        2,
        [f"{path}: not valid TOML: a number has more than 4300 digits"],
    )


def test_arrays_nested_2000_deep_are_one_problem_line(tmp_path, capsys):
    path = tmp_path / "d.toml"
    path.write_text(BASE + "[message]\nx = " + "[" * 2000 + "]" * 2000 + "\n")
    code, [line] = check_config(path, capsys)
    assert code == 2 and line == f"{path}: not valid TOML: arrays or tables nested too deeply"
    path.write_text(BASE + "[limits]\nx = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n")
    code, [line] = check_config(path, capsys)
    assert code == 2 and "nested too deeply" in line
    path.write_text(BASE.replace('members = ["alice", "487"]', "members = " + "[" * 60 + "]" * 60))
    code, lines = check_config(path, capsys)
    assert code == 2 and lines[0].startswith(f"{path}: groups.sales.members[0]: ")


def diamonds(levels: int) -> str:
    """groups top -> (a1, b1) -> (a2, b2) -> ... -> the phone: 2**levels paths to it."""
    lines = ['[phones.486]\nuri = "sip:486@10.0.0.86"', '[groups.top]\nmembers = ["@a1", "@b1"]']
    for i in range(1, levels + 1):
        below = f'["@a{i + 1}", "@b{i + 1}"]' if i < levels else '["486"]'
        lines += [f"[groups.a{i}]\nmembers = {below}", f"[groups.b{i}]\nmembers = {below}"]
    return "\n".join(lines) + "\n"


def chain(length: int) -> str:
    """groups g0 -> g1 -> ... -> the phone, one group inside the next."""
    lines = ['[phones.486]\nuri = "sip:486@10.0.0.86"']
    for i in range(length):
        inner = f'"@g{i + 1}"' if i + 1 < length else '"486"'
        lines.append(f"[groups.g{i}]\nmembers = [{inner}]")
    return "\n".join(lines) + "\n"


def test_26_levels_of_diamond_shaped_groups_are_checked_in_linear_time(tmp_path, capsys):
    import time

    path = tmp_path / "d.toml"
    path.write_text(diamonds(26))
    started = time.monotonic()
    code, [line] = check_config(path, capsys)
    assert code == 0 and line.startswith(f"{path}: ok: ") and " 53 groups;" in line
    # only catches the exponential walk (2^26 paths: minutes); the speed is bench/'s
    assert time.monotonic() - started < 30


def test_a_chain_of_1200_groups_is_valid_and_a_long_cycle_is_one_short_line(tmp_path, capsys):
    path = tmp_path / "d.toml"
    path.write_text(chain(1200))
    assert check_config(path, capsys)[0] == 0
    path.write_text(chain(1200).replace('members = ["486"]', 'members = ["@g0"]'))
    code, [line] = check_config(path, capsys)
    assert code == 2
    assert line == (
        f"{path}: groups.g0.members: group cycle: g0 -> g1 -> g2 -> g3 -> … 1194 more … "
        "-> g1198 -> g1199 -> g0"
    )


def test_keys_with_control_characters_are_reported_on_one_printable_line(tmp_path, capsys):
    path = tmp_path / "d.toml"
    path.write_text(
        BASE + '[phones."486\\n"]\nuri = "sip:486@10.0.0.86"\n[message]\n"a\\u202eb" = 1\n'
    )
    code, lines = check_config(path, capsys)
    assert code == 2
    assert lines == [
        f"{path}: message.a\\u202eb: unknown key (check the spelling against config.example.toml)"
    ]
    path.write_text(BASE + '[phones."486\\n"]\nuri = "sip:486@10.0.0.86"\n')
    assert check_config(path, capsys) == (
        2,
        [f"{path}: phones.486\\n: the key must be an extension of digits, like 486"],
    )


def test_files_that_are_not_config_files_are_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # nothing will ever write: reading it would hang
    assert check_config(fifo, capsys) == (2, [f"{fifo}: not a regular file"])
    assert check_config(tmp_path, capsys) == (2, [f"{tmp_path}: not a regular file"])
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"[sip]\nlisten = '\xff'\n")
    assert check_config(binary, capsys) == (2, [f"{binary}: not UTF-8 text (byte 16)"])


# Fragments of deskbot configs, recombined at random: known tables and keys, values of
# every TOML type, extremes (huge numbers, deep nesting), and plain noise.
TABLES = [
    "[sip]", "[sip.registrar]", "[message]", "[access]", "[limits]", "[audit]", "[health]",
    "[phones.486]", "[phones.487]", "[phones.x]", "[people.alice]", "[people.Bob]",
    "[groups.sales]", "[groups.a]", "[groups.b]", "[matrix]", "[slack]", "[[phones]]",
    "[groups]", "[people.alice.phone]", "[sip",
]  # fmt: skip
KEYS = [
    "listen", "transport", "from_uri", "timeout", "max_in_flight", "uri", "label", "phone",
    "slack", "matrix", "members", "senders", "admins", "path", "max_chars", "homeserver",
    "user_id", "mode", "store", "rooms", "channels", "password_env", '"a\\nb"', "members.x",
]  # fmt: skip
SOME_VALUES = [
    '"127.0.0.1"', '"127.0.0.1:0"', '"[::1]:5060"', '"sip:486@10.0.0.86"', '"486"',
    '"@a"', '"@b"', '"@sales"', '"alice"', '"*"', '["@a", "486"]', '["@b", "alice"]',
    '"udp"', '"tcp"', "true", "nan", "inf", "-0", "1e400", "0x_1", "1979-05-27",
    "1979-13-45T25:61:61Z", "'''x'''", '"\\uD800"', '"\\u0000"', "{}", "[]",
    "1" + "0" * 5000, "[" * 300 + "]" * 300, "{a = " * 300 + "1" + "}" * 300,
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(SOME_VALUES),
    st.integers().map(str),
    st.floats().map(repr),
    st.text(max_size=20).map(lambda t: json.dumps(t)),
    st.lists(st.sampled_from(['"@a"', '"@b"', '"486"', '"alice"', "1"]), max_size=4).map(
        lambda items: "[" + ", ".join(items) + "]"
    ),
)
LINES = st.one_of(
    st.sampled_from(TABLES),
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=30),
)


@settings(
    max_examples=200,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.one_of(st.binary(max_size=300), st.lists(LINES, max_size=30).map("\n".join)))
def test_any_file_gets_exit_0_or_2_and_clean_lines_from_check_config(tmp_path, capsys, content):
    path = tmp_path / "fuzz.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    code, lines = check_config(path, capsys)
    assert_clean(path, code, lines)


def test_a_listen_address_without_port_gets_the_default_port_and_port_0_stays_any():
    from deskbot.senders.sip.agent import SipAgent

    text = BASE.replace('listen = "127.0.0.1:0"', 'listen = "127.0.0.1"')
    text += '[health]\nlisten = "[::1]"\n[slack]\nhttp_listen = "0.0.0.0"\n'
    s = parse(tomllib.loads(text), Path("x"), ENV).settings
    assert s.sip.listen == "127.0.0.1:5060"  # SIP's own port, as in a sip: URI without one
    assert s.health.listen == "[::1]:9120" and s.slack and s.slack.http_listen == "0.0.0.0:3000"
    assert SipAgent(s.sip)._start_settings()["port"] == 5060
    s = parse(tomllib.loads(BASE), Path("x"), ENV).settings
    assert s.sip.listen == "127.0.0.1:0"


def test_relative_audit_and_matrix_store_paths_are_read_from_the_config_files_folder(
    tmp_path, monkeypatch
):
    etc = tmp_path / "etc"
    etc.mkdir()
    path = etc / "d.toml"
    path.write_text(
        BASE + '[audit]\npath = "data/a.sqlite3"\n[matrix]\nhomeserver = "http://h"\n'
        'user_id = "@bot:x.org"\nstore = "./state/matrix"\n'
    )
    monkeypatch.chdir(tmp_path)
    for config_path in (path, Path("etc/d.toml")):
        s = load(config_path, ENV).settings
        assert s.audit.path == str(etc / "data/a.sqlite3")
        assert s.matrix and s.matrix.store == str(etc / "state/matrix")
    path.write_text(BASE + '[audit]\npath = "/var/lib/deskbot/a.sqlite3"\n')
    assert load(path, ENV).settings.audit.path == "/var/lib/deskbot/a.sqlite3"
    path.write_text(BASE)
    assert load(path, ENV).settings.audit.path == str(etc / "data/deskbot.sqlite3")


def test_the_examples_api_block_is_valid_once_uncommented():
    example = (ROOT / "config.example.toml").read_text()
    block = example[example.index("# [api]") : example.index("# The directory.")]
    text = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    env = {**ENV, "DESKBOT_API_TOKEN_MONITORING": "0123456789abcdef"}
    s = parse(tomllib.loads(BASE + text), Path("x.toml"), env).settings
    assert s.api is not None and s.api.listen == "127.0.0.1:9121" and s.api.dedup_window == 900
    assert s.api.clients["monitoring"].targets == ["@sales", "486"]


API = (
    BASE
    + """
[api]
[api.clients.monitoring]
token_env = "TOKEN"
targets = ["@sales", "488", "@nobody"]
"""
)


def test_api_clients_need_a_long_token_and_targets_that_exist():
    found = problems(API, {**ENV, "TOKEN": "short"})
    assert found == [
        "deskbot.toml: api.clients.monitoring.targets[1]: '488' is not a phone, person or group",
        "deskbot.toml: api.clients.monitoring.targets[2]: '@nobody' is not a phone, person or "
        "group",
        "deskbot.toml: api.clients.monitoring.token_env: the token in TOKEN has 5 characters; "
        "use at least 16 (for example `openssl rand -hex 32`)",
    ]
    assert problems(BASE + "[api]\n") == [
        "deskbot.toml: api.clients: no clients: add [api.clients.NAME] with a token_env"
    ]


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("{summary", "not a valid template"),
        ("{labels.__class__}", "is not a field"),
        ("{summary!r}", "no format spec"),
    ],
)
def test_an_alert_template_takes_plain_fields_only(template, says):
    text = BASE + f'[api]\nalert_template = {template!r}\n[api.clients.m]\ntoken_env = "TOKEN"\n'
    [problem] = problems(text, {**ENV, "TOKEN": "0123456789abcdef"})
    assert problem.startswith("deskbot.toml: api.alert_template: ") and says in problem


def test_a_phone_format_defaults_to_the_fleet_format_and_a_wrong_one_names_its_key():
    from deskbot.directory import loader

    raw = {
        "message": {"format": "snom-infobox"},
        "phones": {
            "486": {"uri": "sip:486@10.0.0.86"},
            "487": {"uri": "sip:487@10.0.0.87", "format": "message"},
        },
    }
    directory = loader.from_settings(parse(raw, Path("x.toml"), {}).settings)
    assert [(p.extension, p.format) for p in directory.phones.values()] == [
        ("486", "snom-infobox"),
        ("487", "message"),
    ]
    assert parse({}, Path("x.toml"), {}).settings.message.format == "message"
    [problem] = problems('[phones.486]\nuri = "sip:486@10.0.0.86"\nformat = "infobox"\n')
    assert problem.startswith("deskbot.toml: phones.486.format: ")
    assert (
        "'message', 'snom-infobox', 'snom-xml', 'yealink-xml', 'poly-push' or 'cisco-xml'"
        in problem
    )
