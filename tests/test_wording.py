"""What a phone shows, as the config words it: `sender_prefix = false` and
`[api] alert_template` on an Alertmanager webhook, through `deskbot run`'s HTTP API
to a SIPp desk phone."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

from conftest import API_SERVICE, DeskbotRun, api_post, free_port, phone_got, write_config
from test_crash_http import AM_PAYLOAD

TOKEN = "ops-0123456789abcdef"


def test_no_sender_prefix_and_the_alert_template_are_what_the_phone_shows(tmp_path: Path, sipp):
    phone = sipp(200)
    api = free_port(socket.SOCK_STREAM)
    body = API_SERVICE.format(tmp=tmp_path, api=api) + (
        'alert_template = "{status} {instance}: {summary} ({severity})"\n'
        '[api.clients.ops]\ntoken_env = "OPS_TOKEN"\n'
        f'[message]\nsender_prefix = false\n[phones.486]\nuri = "{phone.uri("486")}"\n'
    )
    etc = tmp_path / "etc"
    etc.mkdir()
    run = DeskbotRun(write_config(etc / "d.toml", body), {"OPS_TOKEN": TOKEN}, tmp_path / "log")
    run.start()
    try:
        status, answer = api_post(api, TOKEN, "/v1/send", {"targets": "486", "text": "lunch"})
        assert status == 200, answer
        alert = copy.deepcopy(AM_PAYLOAD)
        alert["alerts"][0]["labels"] |= {"instance": "cold-room-2", "severity": "critical"}
        status, answer = api_post(api, TOKEN, "/v1/alertmanager?targets=486", alert)
        assert status in (200, 202), answer
        got = phone.wait_received(2, timeout=20)
        assert [m.body.decode() for m in got] == [
            "lunch",  # no "ops: " before it
            "FIRING cold-room-2: Freezer 2 at -12 °C (critical)",
        ]
        assert len(phone_got(phone)) == 2
    finally:
        run.stop()
