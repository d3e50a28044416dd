"""The [desk] endpoint and `deskbot run` with every format: phones fetch only what was pushed.

The endpoint is reached as a phone (or a stranger) would: raw HTTP on
127.0.0.1. ``deskbot run`` takes one API command to a group of every format.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import DeskbotRun, free_port, phone_lines, service_lines, wait_for, write_config

from deskbot.senders.http.board import MAX_SCREENS, Board
from deskbot.settings.schema import Desk
from deskbot.sources.desk import DeskSource

TOKEN = "api-token-0123456789abcdef"


def test_the_board_serves_a_screen_under_its_token_only_until_it_expires():
    now = [100.0]
    board = Board("http://10.0.0.5:9122/", expire=60, clock=lambda: now[0])
    url, screen = board.put("601", b"<CiscoIPPhoneText/>", "text/xml")
    path = url.removeprefix("http://10.0.0.5:9122")
    assert path.startswith("/s/") and len(path) > 20
    assert board.take("/s/" + "A" * 22) is None and board.take(path[:-1]) is None
    assert board.take(path) is screen and screen.fetched.is_set()
    now[0] += 61
    assert board.take(path) is None


def test_the_board_keeps_at_most_max_screens():
    board = Board("http://h", expire=600)
    first, _ = board.put("1", b"x", "text/xml")
    for _ in range(MAX_SCREENS):
        board.put("1", b"x", "text/xml")
    assert len(board) == MAX_SCREENS
    assert board.take(first.removeprefix("http://h")) is None  # the oldest went first


async def test_the_endpoint_serves_nothing_but_a_pushed_screen():
    board = Board("http://127.0.0.1", expire=60)
    desk = DeskSource(Desk(listen="127.0.0.1:0", url="http://127.0.0.1"), board)
    await desk.start()
    try:
        base = f"http://127.0.0.1:{desk.port}"
        url, _ = board.put("601", b"<CiscoIPPhoneText/>", "text/xml; charset=ISO-8859-1")
        path = url.removeprefix("http://127.0.0.1")

        def get(target: str, method: str = "GET", data: bytes | None = None):
            request = urllib.request.Request(base + target, method=method, data=data)
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    return resp.status, resp.read(), dict(resp.headers)
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read(), dict(exc.headers)

        def all_of(*targets):
            return [get(t)[0] for t in targets]

        status, body, headers = await asyncio.to_thread(get, path)
        assert (status, body) == (200, b"<CiscoIPPhoneText/>")
        assert headers["Content-Type"] == "text/xml; charset=ISO-8859-1"
        assert headers["Cache-Control"] == "no-store"
        assert await asyncio.to_thread(
            all_of, "/", "/s/", "/s", "/../etc/passwd", path + "x", "/s/" + "A" * 5000
        ) == [404, 404, 404, 404, 404, 400]  # the last: a request line over 1 KB
        posted = await asyncio.to_thread(get, path, "POST", b"x" * 10)
        assert posted[0] == 405
    finally:
        await desk.stop()


def test_deskbot_run_sends_one_api_command_to_every_format(http_phones, sipp, tmp_path: Path):
    from test_phones import infobox_lines
    from test_screens import screen_of

    classic, box = sipp(200), sipp(200, method="NOTIFY")
    snom, yealink = sipp(200, screen="snom-xml"), sipp(200, screen="yealink-xml")
    api, desk = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    phones = {
        "486": ("message", classic.uri("486"), ""),
        "487": ("snom-infobox", box.uri("487"), ""),
        "488": ("snom-xml", snom.uri("488"), ""),
        "489": ("yealink-xml", yealink.uri("489"), ""),
        "490": ("poly-push", "sip:490@127.0.0.1:9", http_phones.url("490")),
        "491": ("cisco-xml", "sip:491@127.0.0.1:9", http_phones.url("491")),
    }
    lines = service_lines(tmp_path, desk=desk, api=api)
    lines += ["[api.clients.monitoring]", 'token_env = "DESKBOT_API_TOKEN"', 'name = "Alerts"']
    lines += ["[groups.floor]", f"members = {json.dumps(list(phones))}"]
    for ext, (fmt, uri, http) in phones.items():
        lines += phone_lines(ext, uri, fmt, http)
    cfg = write_config(tmp_path / "deskbot.toml", "\n".join(lines) + "\n")
    env = {"DESKBOT_PUSH_PASSWORD": "push-secret", "DESKBOT_API_TOKEN": TOKEN}
    run = DeskbotRun(cfg, env, tmp_path / "run.log").start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{api}/v1/send",
            data=json.dumps({"targets": "@floor", "text": "lunch is here"}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as resp:
            answer = json.load(resp)
        codes = {d["target"]: (d["code"], d["reason"]) for d in answer["deliveries"]}
        assert codes == {
            "486": (200, "OK"),
            "487": (200, "OK"),
            "488": (200, "OK"),
            "489": (200, "OK"),
            "490": (200, "OK"),
            "491": (200, "OK, screen fetched"),
        }
        assert classic.wait_received(1)[0].body == b"Alerts: lunch is here"
        assert infobox_lines(box) == ["Alerts: lunch is here"]
        assert screen_of(snom, "snom-xml") == ("Alerts", ["Alerts: lunch is here"])
        assert screen_of(yealink, "yealink-xml") == ("Alerts", ["Alerts: lunch is here"])
        wait_for(lambda: len(http_phones.shown) == 2, what="both HTTP phones")
        assert sorted((s.extension, s.title, s.lines) for s in http_phones.shown) == [
            ("490", "Alerts", ["Alerts: lunch is here"]),
            ("491", "Alerts", ["Alerts: lunch is here"]),
        ]
        assert "push-secret" not in run.log() and "lunch is here" not in run.log()
    finally:
        assert run.stop() == 0


@pytest.mark.parametrize("fmt", ["poly-push", "cisco-xml"])
def test_an_http_phone_of_a_site_is_a_config_error(tmp_path, fmt):
    from conftest import run_deskbot

    cfg = write_config(
        tmp_path / "deskbot.toml",
        f"""\
        [push]
        username = "deskbot"
        password_env = "P"
        [desk]
        url = "http://10.0.0.5:9122"
        [phones.486]
        uri = "sip:486@10.0.0.86"
        format = "{fmt}"
        site = "berlin"
        """,
    )
    result = run_deskbot("check-config", "-c", str(cfg), env={"P": "x"})
    assert result.returncode == 2
    assert (
        f"phones.486.format: {fmt} is pushed by this deskbot only" in result.stdout + result.stderr
    )
