"""What a phone gets, as the config says it: `sender_prefix = false`, `[api]
alert_template` on an Alertmanager webhook (through `deskbot run`'s HTTP API), and
`[schedules]` added and removed by a live reload; SIPp desk phones."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

from conftest import (
    API_SERVICE,
    DeskbotRun,
    api_post,
    free_port,
    phone_got,
    wait_for,
    write_config,
)
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


def test_a_schedule_added_by_a_live_reload_fires_and_one_removed_stops(tmp_path: Path, sipp):
    kept, changed = sipp(200), sipp(200)
    # the seconds field in front is the documented test hook: every 2 s
    body = f"""
        [sip]
        listen = "127.0.0.1:0"
        [audit]
        path = "{tmp_path / "audit.sqlite3"}"
        [health]
        listen = "127.0.0.1:0"
        [phones.486]
        uri = "{kept.uri("486")}"
        [phones.487]
        uri = "{changed.uri("487")}"
        [schedules.tick]
        cron = "*/2 * * * * *"
        targets = "486"
        text = "tick"
        """
    added = '[schedules.extra]\ncron = "*/2 * * * * *"\ntargets = "487"\ntext = "extra"\n'
    etc = tmp_path / "etc"  # the config alone in its folder, as the watcher prefers
    etc.mkdir()
    path = write_config(etc / "d.toml", body)
    run = DeskbotRun(path, {}, tmp_path / "log").start()
    try:
        kept.wait_received(1, timeout=15)
        assert changed.received() == []
        path.write_text(path.read_text() + added)
        wait_for(lambda: run.log().count("directory reloaded") == 1, what="the reload")
        changed.wait_received(1, timeout=15)  # the added schedule fires
        path.write_text(path.read_text().replace(added, ""))
        wait_for(lambda: run.log().count("directory reloaded") == 2, what="the second reload")
        # barriers: the kept schedule fires on after the removal (2 s apart)
        ticks = len(phone_got(kept))
        kept.wait_received(ticks + 1, timeout=15)  # an "extra" in flight has ended by now
        extras = len(phone_got(changed))
        kept.wait_received(ticks + 3, timeout=15)
        assert len(phone_got(changed)) == extras  # the removed schedule fired no more
        assert "take effect after a restart" not in run.log()
    finally:
        run.stop()
