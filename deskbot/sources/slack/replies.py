"""Slack reply bookkeeping: per-channel pacing, response_url uses, and how one command is answered.

A slash command is acknowledged, then gets an anchor message in its channel
and the report in the anchor's thread; when the bot may not post there (not
in the channel) the command's response_url carries the reply instead. A
mention or DM is answered in its own thread. Refusals are private
(ephemeral), except in a DM, which is private anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from deskbot.relay import report
from deskbot.relay.values import Answer, ChatUser, Dispatch
from deskbot.sources.slack import wire

log = logging.getLogger("deskbot.slack")

POST_INTERVAL = 1.0  # Slack allows about one chat.postMessage per second per channel
RESPONSE_URL_USES = 5  # Slack accepts 5 posts per response_url
NO_POST_ERRORS = ("not_in_channel", "channel_not_found")


class ChannelPacer:
    """At most one post per ``interval`` seconds in each channel."""

    def __init__(
        self, interval: float = POST_INTERVAL, clock: Callable[[], float] = time.monotonic
    ):
        self.interval, self.clock = interval, clock
        self.next_slot: dict[str, float] = {}

    async def wait(self, channel: str) -> None:
        now = self.clock()
        slot = max(now, self.next_slot.get(channel, now))
        self.next_slot[channel] = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class Job:
    """Where a command's answer goes."""

    user: ChatUser
    channel: str
    thread_ts: str = ""  # reply under this message; empty: a slash command (post an anchor)
    response_url: str = ""
    direct: bool = False  # a DM: every reply is private anyway


class Poster:
    """Posts to Slack: paced per channel, response_url uses counted."""

    def __init__(self, client: AsyncWebClient):
        self.client = client
        self.pacer = ChannelPacer()
        self.response_url_uses: dict[str, int] = {}

    async def post(
        self, channel: str, text: str, blocks: list[dict[str, Any]] | None, thread_ts: str = ""
    ) -> str:
        await self.pacer.wait(channel)
        response = await self.client.chat_postMessage(
            channel=channel,
            text=wire.fallback(text),
            blocks=blocks,
            thread_ts=thread_ts or None,
            unfurl_links=False,
        )
        return str(response["ts"])

    async def answer(self, job: Job, answer: Answer) -> None:
        blocks = wire.answer_blocks(answer)
        if job.direct:
            await self.post(job.channel, answer.text, blocks, job.thread_ts)
            return
        await self.client.chat_postEphemeral(
            channel=job.channel,
            user=job.user.id,
            text=wire.fallback(answer.text),
            blocks=blocks,
            thread_ts=job.thread_ts or None,
        )

    async def reply(self, job: Job, text: str, blocks: list[dict[str, Any]] | None) -> None:
        if job.thread_ts:
            await self.post(job.channel, text, blocks, job.thread_ts)
        else:
            await self.respond(job, text, blocks, in_channel=False)

    async def respond(
        self, job: Job, text: str, blocks: list[dict[str, Any]] | None, in_channel: bool
    ) -> None:
        url = job.response_url
        uses = self.response_url_uses.get(url, 0)
        if not url or uses >= RESPONSE_URL_USES:
            log.error("slack: no way left to answer %s in %s", job.user.id, job.channel)
            return
        self.response_url_uses[url] = uses + 1
        response = await AsyncWebhookClient(url).send(
            text=wire.fallback(text),
            blocks=blocks,
            response_type="in_channel" if in_channel else "ephemeral",
        )
        if response.status_code != 200:
            log.error("slack: response_url answered %s", response.status_code)


Ack = Callable[..., Awaitable[Any]]


class SlackReplier:
    """Answers one command; ``ack`` is the slash command's acknowledgement (None for events)."""

    def __init__(
        self,
        poster: Poster,
        job: Job,
        ack: Ack | None = None,
        on_anchor: Callable[[str], None] | None = None,
        later: bool = False,
    ):
        self.poster, self.job, self._ack = poster, job, ack
        self.on_anchor = on_anchor  # told a confirm command's anchor ts: its thread from now on
        self.later = later  # answers a command later (a confirmation): said in the thread
        self.waiting_after: float | None = 0.0 if ack is not None else None
        self.acked = ack is None
        self.anchor_failed = False
        self.title = ""  # the anchor's text, once posted or tried

    async def ack(self, **response: Any) -> None:
        """Acknowledge a slash command once (Slack wants it within 3 s); events need none."""
        if not self.acked and self._ack is not None:
            self.acked = True
            await self._ack(**response)

    async def answer(self, answer: Answer) -> None:
        if not self.acked:
            blocks = wire.answer_blocks(answer)
            text = wire.fallback(answer.text)
            await self.ack(response_type="ephemeral", text=text, blocks=blocks)
        elif self.later and not answer.error:  # news for everyone in the command's thread
            text, blocks = wire.fallback(answer.text), wire.answer_blocks(answer)
            await self.poster.post(self.job.channel, text, blocks, self.job.thread_ts)
        else:
            await self.poster.answer(self.job, answer)

    async def waiting(self, job: Dispatch) -> None:
        """Acknowledge, then post the anchor the report will thread under."""
        await self.ack()
        if self.job.thread_ts:
            return
        self.title = title = job.title
        try:
            self.job.thread_ts = await self.poster.post(
                self.job.channel, title, [wire.section("📟 " + report.mrkdwn_escape(title))]
            )
            if self.on_anchor is not None and job.confirm:  # its confirmations go there
                self.on_anchor(self.job.thread_ts)
        except SlackApiError as exc:
            if not self.job.response_url:
                raise
            error = exc.response.get("error")
            if error not in NO_POST_ERRORS:
                log.warning(
                    "slack: cannot post in %s (%s): answering privately", self.job.channel, error
                )
            self.anchor_failed = True

    async def report(self, result: report.Report) -> None:
        text = report.plain(result)
        blocks = wire.report_blocks(result)
        if self.anchor_failed:  # the bot is not in the channel: the command's own reply channel
            title = self.title
            blocks = [wire.section("📟 " + report.mrkdwn_escape(title)), *blocks]
            await self.poster.respond(self.job, f"{title}\n{text}", blocks, in_channel=True)
        else:
            await self.poster.reply(self.job, text, blocks)
