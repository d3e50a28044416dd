"""A real Alertmanager notifying `deskbot run`, which sends to a SIPp desk phone.

Alerts are posted to Alertmanager's API as Prometheus would; what counts is
what the phone received (SIPp's trace of MESSAGE requests).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from alertmanager import Alertmanager
from conftest import (
    API_SERVICE,
    DeskbotRun,
    SippPhone,
    free_port,
    phone_got,
    wait_for,
    write_config,
)

TOKEN = "am-token-0123456789abcdef"
FREEZER = ({"alertname": "FreezerWarm", "severity": "critical"}, {"summary": "Freezer 2 at -12 C"})

CONFIG = (
    API_SERVICE
    + """
[phones.486]
uri = "{phone}"
label = "Warehouse"
[api.clients.monitoring]
token_env = "DESKBOT_API_TOKEN_MONITORING"
targets = ["486"]
name = "Alerts"
"""
)


def texts(phone: SippPhone) -> list[str]:
    """What the phone was sent, once per MESSAGE (conftest's phone_got)."""
    return [message.body.decode() for message in phone_got(phone)]


@pytest.fixture
def gateway(sipp, tmp_path: Path) -> Iterator[tuple[SippPhone, DeskbotRun, str]]:
    """`deskbot run` with [api] and no chat: a notification gateway to one phone."""
    phone = sipp(200)
    port = free_port(socket.SOCK_STREAM)
    path = write_config(
        tmp_path / "deskbot.toml", CONFIG.format(tmp=tmp_path, phone=phone.uri(), api=port)
    )
    run = DeskbotRun(path, {"DESKBOT_API_TOKEN_MONITORING": TOKEN}, tmp_path / "deskbot.log")
    run.start()
    try:
        yield phone, run, f"http://127.0.0.1:{port}/v1/alertmanager?targets=486"
    finally:
        assert run.stop() == 0


@pytest.fixture
def alertmanagers(tmp_path: Path) -> Iterator[list[Alertmanager]]:
    started: list[Alertmanager] = []
    yield started
    for am in started:
        am.stop()


def test_an_alert_reaches_the_phone_with_its_name_and_summary_and_its_resolution_follows(
    gateway, alertmanagers, tmp_path
):
    phone, run, url = gateway
    am = Alertmanager(tmp_path, url, TOKEN)
    alertmanagers.append(am)
    am.post_alert(*FREEZER)
    wait_for(lambda: texts(phone), what="the alert on the phone")
    assert texts(phone) == ["Alerts: FIRING: FreezerWarm: Freezer 2 at -12 C"]
    am.post_alert(*FREEZER, resolved=True)
    wait_for(lambda: len(texts(phone)) == 2, what="the resolution on the phone")
    assert texts(phone)[1] == "Alerts: RESOLVED: FreezerWarm: Freezer 2 at -12 C"
    assert am.notifications() == (2, 0)  # both answered 2xx: none failed, none retried
    assert "1/1 delivered" in run.log()


def test_an_ha_pair_notifies_twice_and_the_phone_gets_each_text_once(
    gateway, alertmanagers, tmp_path
):
    phone, run, url = gateway
    pair = [Alertmanager(tmp_path, url, TOKEN) for _ in range(2)]
    alertmanagers.extend(pair)
    for am in pair:  # Prometheus sends every alert to each Alertmanager of a pair
        am.post_alert(*FREEZER)
    wait_for(lambda: all(am.notifications() == (1, 0) for am in pair), what="both notifications")
    wait_for(lambda: texts(phone), what="the alert on the phone")
    assert texts(phone) == ["Alerts: FIRING: FreezerWarm: Freezer 2 at -12 C"]
    for am in pair:
        am.post_alert(*FREEZER, resolved=True)
    wait_for(lambda: all(am.notifications() == (2, 0) for am in pair), what="both resolutions")
    wait_for(lambda: len(texts(phone)) >= 2, what="the resolution on the phone")
    assert texts(phone) == [
        "Alerts: FIRING: FreezerWarm: Freezer 2 at -12 C",
        "Alerts: RESOLVED: FreezerWarm: Freezer 2 at -12 C",
    ]
    repeats = "alertmanager notification from monitoring came in again"
    wait_for(lambda: run.log().count(repeats) >= 2, what="both repeats recognised")
    assert run.log().count(repeats) == 2 and len(texts(phone)) == 2
