"""From a phone's press of OK to the confirmation in the Slack thread: deskbot's own part.

Run by hand: ``.venv/bin/python bench/confirm.py --runs 30``. Starts the tests'
Slack stand-in and fake Poly phone (in this process) and ``deskbot run``
(Socket Mode, [desk] on loopback). Each run is a slash command
``confirm 601 run N`` in a channel of its own (Slack's pace of one post per
second per channel would otherwise be measured); once every report is in and
each channel's next post slot is free, the phone's key is pressed run by run.

The clock starts when the bench's HTTP client opens the GET of the key's URL
and stops when the stand-in takes the ``chat.postMessage`` of "601 ...
confirmed at HH:MM" (its own handling after that, Slack's part, is not
counted). In between: the desk endpoint, the press recorded in the audit log
(SQLite, synchronous=FULL), the thank-you answer, the poster's task and
slack_sdk's Web API call over loopback.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import (  # noqa: E402  (the tests' helpers and peers)
    DeskbotRun,
    desk_lines,
    free_port,
    http_get,
    ok_key,
    phone_lines,
    service_lines,
    wait_for,
)
from http_phones import HttpPhones  # noqa: E402
from slack_standin import APP_TOKEN, BOT_TOKEN, SlackStandIn  # noqa: E402

ALICE = "U0ALICE"
PACE = 1.05  # seconds after a channel's last post before its next slot is free


def config(tmp: Path, slack: SlackStandIn, phones: HttpPhones, channels: list[str]) -> Path:
    import socket

    lines = service_lines(tmp) + desk_lines(free_port(socket.SOCK_STREAM))
    lines += ["[limits]", "per_sender_per_minute = 10000", "per_phone_per_minute = 10000"]
    lines += ["[access]", 'senders = ["alice"]']
    lines += ["[people.alice]", 'phone = "601"', f'slack = "{ALICE}"']
    lines += ["[slack]", 'mode = "socket"', f'api_url = "{slack.api_url}"']
    lines.append("channels = [" + ", ".join(f'"{c}"' for c in channels) + "]")
    lines += phone_lines("601", "sip:601@127.0.0.1:9", "poly-push", phones.url("601"), "Reception")
    etc = tmp / "etc"
    etc.mkdir()
    path = etc / "deskbot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(runs: int) -> tuple[list[float], list[float]]:
    """(press to post, press to the phone's thank-you) in ms, one of each per run."""
    channels = [f"C0BENCH{i:04d}" for i in range(runs)]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        slack, phones = SlackStandIn(), HttpPhones().start()
        env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_APP_TOKEN": APP_TOKEN,
            "DESKBOT_PUSH_PASSWORD": "push-secret",
        }
        bot = DeskbotRun(config(tmp, slack, phones, channels), env, tmp / "deskbot.log")
        try:
            bot.start()
            wait_for(lambda: slack.socket_open, what="deskbot's Socket Mode socket")
            for i, channel in enumerate(channels):
                slack.push_command(f"confirm 601 run {i}", ALICE, channel)
            reports = {c: report(slack, c) for c in channels}
            keys = {}
            for i, channel in enumerate(channels):
                shown = wait_for(
                    lambda i=i: [s for s in phones.shown if f"run {i}" in " ".join(s.lines)],
                    what=f"the screen of run {i}",
                )
                keys[channel] = ok_key(shown[0].raw, "poly-push")
            time.sleep(max(0.0, max(r for r in reports.values()) + PACE - time.monotonic()))
            to_post, to_thanks = [], []
            for channel in channels:
                started = time.monotonic()
                status, _ = http_get(keys[channel])
                thanked = time.monotonic()
                assert status == 200, status
                posted = wait_for(lambda c=channel: confirmed(slack, c), what="the confirmation")
                to_post.append((posted - started) * 1000)
                to_thanks.append((thanked - started) * 1000)
            return to_post, to_thanks
        finally:
            bot.stop()
            phones.stop()
            slack.close()


def report(slack: SlackStandIn, channel: str) -> float:
    """When the stand-in took the report in the channel's thread."""

    def found() -> float | None:
        for anchor in (p for p in slack.posts if p.channel == channel and not p.thread_ts):
            for post in slack.posts:
                if post.thread_ts == anchor.args["ts"] and "200 OK" in post.text:
                    return post.at
        return None

    return wait_for(found, timeout=60, what=f"the report in {channel}")


def confirmed(slack: SlackStandIn, channel: str) -> float | None:
    for post in list(slack.posts):
        if post.channel == channel and post.thread_ts and "confirmed at" in post.text:
            return post.at
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    to_post, to_thanks = measure(args.runs)
    post_q = (
        statistics.quantiles(to_post, n=20, method="inclusive")
        if len(to_post) > 1
        else to_post * 19
    )
    print(f"runs: {args.runs}")
    print(
        f"press to the post in the thread: median {statistics.median(to_post):.1f} ms, "
        f"p95 {post_q[18]:.1f} ms, best {min(to_post):.1f} ms, worst {max(to_post):.1f} ms"
    )
    print(f"press to the phone's thank-you: median {statistics.median(to_thanks):.1f} ms")
    print("target: median under 20 ms (deskbot's own part, the stand-in's handling aside)")


if __name__ == "__main__":
    main()
