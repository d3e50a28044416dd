"""Confirmations through `deskbot run` and the API: Snom, Yealink and Poly phones carry the OK key.

SIPp phones take the Snom and Yealink screens, a fake Poly phone its push; the
test reads the key's URL out of what each phone got, plays each phone's GET and
parses the maker's "Thank you" screen that answers it.
``GET /v1/commands/ID`` shows each phone's state; another client sees 404.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from conftest import (
    DeskbotRun,
    free_port,
    http_get,
    ok_key,
    phone_lines,
    service_lines,
    thanks_of,
    wait_for,
    write_config,
)

TOKEN = "api-token-0123456789abcdef"
OTHER = "api-token-other-0123456789"
THANKS = "Thank you: your confirmation was received"


def test_an_api_confirm_send_is_confirmed_at_the_snom_yealink_and_poly_phones(
    http_phones, sipp, tmp_path: Path
):
    snom, yealink, plain = sipp(200, screen="snom-xml"), sipp(200, screen="yealink-xml"), sipp(200)
    api, desk = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    lines = service_lines(tmp_path, desk=desk, api=api)
    lines += ["[api.clients.monitoring]", 'token_env = "DESKBOT_API_TOKEN"']
    lines += ["[api.clients.other]", 'token_env = "DESKBOT_API_OTHER"']
    lines += phone_lines("601", snom.uri("601"), "snom-xml", label="Reception")
    lines += phone_lines("602", "sip:602@127.0.0.1:9", "poly-push", http_phones.url("602"))
    lines += phone_lines("603", plain.uri("603"))
    lines += phone_lines("604", yealink.uri("604"), "yealink-xml")
    lines += ["[groups.floor]", 'members = ["601", "602", "603", "604"]']
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
        codes = {d["target"]: d["code"] for d in answer["deliveries"]}
        assert codes == {"601": 200, "602": 200, "603": 200, "604": 200}
        assert states(command) == {
            "601": ("waiting", False),
            "602": ("waiting", False),
            "603": ("unsupported", False),
            "604": ("waiting", False),
        }
        wait_for(lambda: http_phones.shown, what="the Poly push")
        urls = {
            "snom-xml": ok_key(snom.wait_received(1)[0].body, "snom-xml"),
            "yealink-xml": ok_key(yealink.wait_received(1)[0].body, "yealink-xml"),
            "poly-push": ok_key(http_phones.shown[0].raw, "poly-push"),
        }
        for url in urls.values():
            assert url.startswith(f"http://127.0.0.1:{desk}/c/")
        assert len(set(urls.values())) == 3  # a token per phone
        assert plain.wait_received(1)[0].body == b"monitoring: Fire drill at 14:00"

        assert http_get(urls["snom-xml"][:-2] + "zz")[0] == 404
        for fmt, url in urls.items():
            status, page = http_get(url)
            assert status == 200 and thanks_of(page, fmt) == THANKS, fmt
        assert states(command) == {
            "601": ("confirmed", True),
            "602": ("confirmed", True),
            "603": ("unsupported", False),
            "604": ("confirmed", True),
        }
        status, page = http_get(urls["yealink-xml"])  # pressed again: thanked, nothing new
        assert status == 200 and thanks_of(page, "yealink-xml") == THANKS
        assert call(f"/v1/commands/{command}", token=OTHER)[0] == 404
        assert call("/v1/commands/999999")[0] == 404
        assert call("/v1/commands/x")[0] == 404
        log = run.log()
        assert not [url for url in urls.values() if url.rpartition("/")[2] in log]
        assert "Fire drill" not in log
    finally:
        assert run.stop() == 0
