"""The API against careless and hostile clients: reused keys, look-alike names, shared tokens,
huge texts and bodies (fuzzed). deskbot's relay and ApiSource run in the test's loop on a
recording sender, as in test_api.py; requests go over real HTTP on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_api import AM_PAYLOAD, MON, TOKENS

from deskbot.settings.load import ConfigError, parse

api_for, phones = test_api.api_for, test_api.phones  # the fixtures


async def test_an_idempotency_key_reused_with_another_body_is_422_and_sends_nothing(
    api_for, phones
):
    api = await api_for()
    once = {**MON, "Idempotency-Key": "deploy-4711"}
    first = await api.post("/v1/send", {"targets": "486", "text": "deploy done"}, once)
    other_text = await api.post("/v1/send", {"targets": "486", "text": "rollback!"}, once)
    other_targets = await api.post("/v1/send", {"targets": "@ops", "text": "deploy done"}, once)
    again = await api.post("/v1/send", {"targets": "486", "text": "deploy done"}, once)

    assert first[0] == 200 and again[0] == 200
    for status, body, _ in (other_text, other_targets):
        assert status == 422 and body["error"] == "idempotency-key-reused"
    assert phones.texts("486") == ["Alerts: deploy done"]


def test_client_names_must_match_the_name_pattern_whole_and_tokens_are_not_shared():
    raw = {
        "api": {
            "clients": {
                "team": {"token_env": "T1"},
                "team:ops": {"token_env": "T2"},
                "other": {"token_env": "T3"},
            }
        }
    }
    environ = {"T1": "a" * 32, "T2": "b" * 32, "T3": "a" * 32}
    with pytest.raises(ConfigError) as refused:
        parse(raw, Path("c.toml"), environ)
    assert refused.value.problems == [
        "c.toml: api.clients.team:ops: names are lower-case letters, digits, . _ -",
        "c.toml: api.clients.other.token_env: the same token as api.clients.team: "
        "give each client its own",
    ]


async def test_a_text_far_over_max_chars_is_refused_with_its_length(api_for, phones):
    api = await api_for()
    text = "\x01" * 150_000  # refused for its length, before it is cleaned (to nothing)
    status, body, _ = await api.post("/v1/send", {"targets": "486", "text": text}, MON)
    assert status == 422 and body["error"] == "too-long"
    assert "150000 characters, the limit is 160" in body["message"]
    assert phones.sent == []


async def test_a_scoped_client_s_phones_are_resolved_once_per_directory_and_anew_at_a_reload(
    api_for, phones
):
    from deskbot.directory import loader
    from deskbot.relay.values import Policy

    api = await api_for()
    relay = api.source.relay
    resolved: list[str] = []
    directory = relay.directory
    plain_resolve = directory.resolve
    directory.resolve = lambda t: resolved.append(t) or plain_resolve(t)  # type: ignore[method-assign]
    for i in range(5):
        status, _, _ = await api.post("/v1/send", {"targets": "486", "text": f"n{i}"}, MON)
        assert status == 200
    assert resolved.count("@ops") == 1  # the client's scope: once, not once per request
    assert (await api.post("/v1/send", {"targets": "488", "text": "x"}, MON))[0] == 403
    bigger = test_api.settings(groups={"ops": {"members": ["486", "487", "488"]}})
    relay.use(loader.from_settings(bigger), Policy.from_settings(bigger))  # a reload
    assert (await api.post("/v1/send", {"targets": "488", "text": "now"}, MON))[0] == 200


async def test_a_bad_webhook_body_is_named_in_plain_english(api_for, phones):
    api = await api_for()
    for path, kind in (
        ("/v1/alertmanager?targets=486", "an alertmanager"),
        ("/v1/grafana?targets=486", "a grafana"),
    ):
        status, body, _ = await api.post(path, {"alerts": "none"}, MON)
        assert status == 400 and body["message"].startswith(f"not {kind} notification: "), body
    assert phones.sent == []


BODIES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=BODIES, raw=st.binary(max_size=200), alerts=st.lists(BODIES, max_size=5))
async def test_any_body_gets_an_answer_that_names_the_problem_and_the_api_keeps_running(
    api_for, phones, body, raw, alerts
):
    api = await api_for()
    for path, data in (
        ("/v1/send", json.dumps(body).encode()),
        ("/v1/send", raw),
        ("/v1/alertmanager?targets=486", json.dumps({**AM_PAYLOAD, "alerts": alerts}).encode()),
        ("/v1/grafana?targets=486", raw),
    ):
        status, answer, _ = await api.post(path, raw=data, headers=MON)
        assert status < 500, (path, data, answer)
        if status >= 400:
            assert set(answer) == {"error", "message"} and answer["error"]
    assert TOKENS  # the clients are known
