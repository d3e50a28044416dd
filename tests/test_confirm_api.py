"""Confirmations through `deskbot run` and the API: Snom and Poly phones carry the OK key.

A SIPp phone takes the Snom screen, a fake Poly phone its push; the test
reads the key's URL out of what each phone got and plays the phone's GET.
``GET /v1/commands/ID`` shows each phone's state; another client sees 404.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

from conftest import DeskbotRun, free_port, wait_for, write_config

TOKEN = "api-token-0123456789abcdef"
OTHER = "api-token-other-0123456789"


def test_an_api_confirm_send_is_confirmed_at_the_snom_and_poly_phones(
    http_phones, sipp, tmp_path: Path
):
    snom, plain = sipp(200, screen="snom-xml"), sipp(200)
    api, desk = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    lines = [
        "[sip]",
        'listen = "127.0.0.1:0"',
        "timeout = 1.0",
        "[audit]",
        f'path = "{tmp_path / "audit.sqlite3"}"',
        "[health]",
        'listen = "127.0.0.1:0"',
        "[push]",
        'username = "deskbot"',
        'password_env = "DESKBOT_PUSH_PASSWORD"',
        "[desk]",
        f'listen = "127.0.0.1:{desk}"',
        f'url = "http://127.0.0.1:{desk}"',
        "[api]",
        f'listen = "127.0.0.1:{api}"',
        "[api.clients.monitoring]",
        'token_env = "DESKBOT_API_TOKEN"',
        "[api.clients.other]",
        'token_env = "DESKBOT_API_OTHER"',
        "[phones.601]",
        f'uri = "{snom.uri("601")}"',
        'label = "Reception"',
        'format = "snom-xml"',
        "[phones.602]",
        'uri = "sip:602@127.0.0.1:9"',
        'format = "poly-push"',
        f'http = "{http_phones.url("602")}"',
        "[phones.603]",
        f'uri = "{plain.uri("603")}"',
        "[groups.floor]",
        'members = ["601", "602", "603"]',
    ]
    cfg = write_config(tmp_path / "deskbot.toml", "\n".join(lines) + "\n")
    env = {
        "DESKBOT_PUSH_PASSWORD": "push-secret",
        "DESKBOT_API_TOKEN": TOKEN,
        "DESKBOT_API_OTHER": OTHER,
    }
    run = DeskbotRun(cfg, env, tmp_path / "run.log").start()

    def call(path: str, body: dict | None = None, token: str = TOKEN) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{api}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=20) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def press(url: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def states(command: int) -> dict[str, tuple[str | None, bool]]:
        status, answer = call(f"/v1/commands/{command}")
        assert status == 200 and answer["id"] == command
        return {
            d["target"]: (d["confirm"], d["confirmed_at"] is not None) for d in answer["deliveries"]
        }

    try:
        assert call("/v1/send", {"targets": "@floor", "text": "x", "confirm": "yes"})[0] == 400
        status, answer = call(
            "/v1/send", {"targets": "@floor", "text": "Fire drill at 14:00", "confirm": True}
        )
        assert status == 200
        command = answer["id"]
        assert {d["target"]: d["code"] for d in answer["deliveries"]} == {
            "601": 200,
            "602": 200,
            "603": 200,
        }
        assert states(command) == {
            "601": ("waiting", False),
            "602": ("waiting", False),
            "603": ("unsupported", False),
        }
        [notify] = snom.wait_received(1)
        key = ET.fromstring(notify.body).find("SoftKeyItem")
        assert key is not None and key.findtext("Label") == "OK"
        snom_url = key.findtext("URL") or ""
        assert snom_url.startswith(f"http://127.0.0.1:{desk}/c/")
        wait_for(lambda: http_phones.shown, what="the Poly push")
        found = re.search(rb'label="OK" action="SoftKey:Fetch;([^"]+)"', http_phones.shown[0].raw)
        assert found is not None
        poly_url = found.group(1).decode()
        assert plain.wait_received(1)[0].body == b"monitoring: Fire drill at 14:00"

        status, body = press(snom_url)
        assert status == 200 and ET.fromstring(body).tag == "SnomIPPhoneText"
        status, body = press(poly_url)
        assert status == 200 and b"Thank you" in body and b"<html" in body
        assert press(snom_url[:-2] + "zz")[0] == 404
        assert states(command) == {
            "601": ("confirmed", True),
            "602": ("confirmed", True),
            "603": ("unsupported", False),
        }
        assert call(f"/v1/commands/{command}", token=OTHER)[0] == 404
        assert call("/v1/commands/999999")[0] == 404
        assert call("/v1/commands/x")[0] == 404
        log = run.log()
        assert snom_url.rpartition("/")[2] not in log and poly_url.rpartition("/")[2] not in log
        assert "Fire drill" not in log
    finally:
        assert run.stop() == 0
