"""Slack: slash commands, mentions and DMs in; threaded reports out.

Built on slack-bolt's ``AsyncApp``, in Socket Mode (no inbound port) or HTTP
mode (Slack posts to ``/slack/events``, bolt checks the signature). Commands
are acknowledged first; the SIP work runs afterwards in tracked tasks, so
Slack's 3-second limit holds whatever the phones do and shutdown can finish
or report what is still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from deskbot import report
from deskbot.config import SlackSettings
from deskbot.relay import Answer, ChatUser, Dispatch, Relay

log = logging.getLogger("deskbot.slack")

POST_INTERVAL = 1.0  # Slack allows about one chat.postMessage per second per channel
RESPONSE_URL_USES = 5  # Slack accepts 5 posts per response_url
NAME_LOOKUP_TIMEOUT = 0.8  # users.info must not hold up the 3-second ack
SECTION_CHARS = 2900  # a section block's text takes 3000 characters
NO_POST_ERRORS = ("not_in_channel", "channel_not_found")
SHUTDOWN_NOTICE = (
    "⚠️ deskbot stopped before every phone answered: the text may or may not have "
    "arrived. `history` shows what was recorded."
)
# bolt reads these from the environment when they are not passed; deskbot passes what
# it means to use (from the *_env names), and a stray client id/secret would switch on OAuth.
_BOLT_ENV_FALLBACKS = ("SLACK_BOT_TOKEN", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET")

_MENTION_RE = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
_CHANNEL_RE = re.compile(r"<#([CG][A-Z0-9]+)(?:\|([^>]*))?>")
_LINK_RE = re.compile(r"<((?:https?|mailto|tel):[^|>]+)(?:\|([^>]*))?>")
_SPECIAL_RE = re.compile(r"<!(\w+)(?:\^[^|>]*)?(?:\|([^>]*))?>")


def from_slack(text: str) -> str:
    """Slack's escaped message text -> what a person typed.

    The first word (and the target of ``who``) keep Slack's mention syntax, so
    the directory can match ``<@U123>`` to a person; in the text that goes to
    the phone ``<@U123|alice>`` becomes ``@alice`` and links show their URL.
    """
    words = text.strip().split(" ")
    keep = 2 if words and words[0].lower() == "who" else 1
    head = [html.unescape(w) for w in words[:keep]]
    rest = " ".join(words[keep:])
    rest = _MENTION_RE.sub(lambda m: "@" + (m.group(2) or m.group(1)), rest)
    rest = _CHANNEL_RE.sub(lambda m: "#" + (m.group(2) or m.group(1)), rest)
    rest = _LINK_RE.sub(lambda m: m.group(1).removeprefix("mailto:"), rest)
    rest = _SPECIAL_RE.sub(lambda m: "@" + (m.group(2) or m.group(1)), rest)
    return " ".join([*head, html.unescape(rest)] if rest else head)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def answer_blocks(answer: Answer) -> list[dict[str, Any]]:
    """Answers are written with `code` spans and bullets: Slack mrkdwn reads them as is."""
    text = ("⚠️ " if answer.error else "") + answer.text
    return [_section(chunk) for chunk in _chunks(text)][:50]


def report_blocks(result: report.Report) -> list[dict[str, Any]]:
    lines = [report.mrkdwn_escape(report.line_text(ln)) for ln in result.lines]
    blocks = [_section(chunk) for chunk in _chunks("\n".join(lines))][:49]
    if result.summary_wanted:
        summary = f"*{report.summary_text(result)}*"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": summary}]})
    return blocks


def _chunks(text: str) -> Iterator[str]:
    chunk = ""
    for line in text.split("\n"):
        if chunk and len(chunk) + len(line) + 1 > SECTION_CHARS:
            yield chunk
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line[:SECTION_CHARS]
    if chunk:
        yield chunk


@contextlib.contextmanager
def _hidden_env(names: tuple[str, ...]) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


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


class SlackAdapter:
    name = "slack"

    def __init__(self, settings: SlackSettings, relay: Relay, secret: Callable[[str], str]):
        self.settings = settings
        self.relay = relay
        self.bot_token = secret(settings.bot_token_env)
        if settings.mode == "socket":
            self.app_token, self.signing_secret = secret(settings.app_token_env), ""
        else:
            self.app_token, self.signing_secret = "", secret(settings.signing_secret_env)
        self.bot_user_id = ""
        self.pacer = ChannelPacer()
        self.names: dict[str, str] = {}
        self.response_url_uses: dict[str, int] = {}
        self.jobs: dict[asyncio.Task[None], Job] = {}
        self.accepting = True
        self.client: AsyncWebClient | None = None
        self.app: AsyncApp | None = None
        self.socket: AsyncSocketModeHandler | None = None
        self.runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------
    @property
    def connected(self) -> bool:
        if self.socket is not None:
            client = self.socket.client
            session = client.current_session
            return not client.closed and session is not None and not session.closed
        return self.runner is not None and bool(self.runner.sites)

    async def start(self) -> None:
        self.client = AsyncWebClient(
            token=self.bot_token,
            base_url=self.settings.api_url,
            retry_handlers=[
                *async_default_handlers(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            ],
        )
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            raise RuntimeError(
                f"Slack refused the bot token from ${self.settings.bot_token_env}: "
                f"{exc.response.get('error')}"
            ) from None
        self.bot_user_id = str(auth.get("user_id", ""))
        with _hidden_env(_BOLT_ENV_FALLBACKS):
            self.app = AsyncApp(
                client=self.client,
                signing_secret=self.signing_secret,
                request_verification_enabled=self.settings.mode == "http",
                process_before_response=False,
                logger=logging.getLogger("deskbot.slack.bolt"),
            )
        self.app.command(self.settings.command)(self._on_command)
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        if self.settings.mode == "socket":
            await self._start_socket()
        else:
            await self._start_http()
        log.info(
            "slack: %s mode, bot %s, command %s",
            self.settings.mode,
            self.bot_user_id,
            self.settings.command,
        )

    async def _start_socket(self) -> None:
        assert self.app is not None
        self.socket = AsyncSocketModeHandler(
            self.app, self.app_token, logger=logging.getLogger("deskbot.slack.socket")
        )
        client = self.socket.client
        try:  # a bad app token fails here, before the retry loop of connect()
            client.wss_uri = await client.issue_new_wss_url()
        except SlackApiError as exc:
            await client.close()
            raise RuntimeError(
                f"Slack refused the app token from ${self.settings.app_token_env}: "
                f"{exc.response.get('error')} (it needs the connections:write scope)"
            ) from None
        await client.connect()

    async def _start_http(self) -> None:
        host, _, port = self.settings.http_listen.rpartition(":")
        server = web.Application()
        server.router.add_post("/slack/events", self._http_events)
        self.runner = web.AppRunner(server, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, host.strip("[]") or "127.0.0.1", int(port)).start()

    async def _http_events(self, request: web.Request) -> web.Response:
        assert self.app is not None
        if not self.accepting:
            return web.Response(status=503, text="deskbot is stopping")
        response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    async def run(self) -> None:
        # bolt and the socket client serve on their own tasks and reconnect by themselves
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.accepting = False
        if self.socket is not None:
            with contextlib.suppress(Exception):
                await self.socket.close_async()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if not self.jobs:
            return
        grace = self.relay.settings.sip.timeout + 5.0
        log.info("slack: finishing %d command(s) in flight", len(self.jobs))
        _done, pending = await asyncio.wait(set(self.jobs), timeout=grace)
        if not pending:
            return
        log.warning("slack: %d command(s) cut off at shutdown; telling their senders", len(pending))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in pending:
            job = self.jobs.pop(task, None)
            if job is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._post_reply(job, SHUTDOWN_NOTICE, None), 3.0)

    async def notify_admins(self, text: str) -> None:
        if self.client is None:
            return
        people = self.relay.directory.people
        for name in self.relay.settings.access.admins:
            person = people.get(name)
            if person is None or not person.slack:
                continue
            try:
                opened = await self.client.conversations_open(users=person.slack)
                channel = opened["channel"]["id"]
                await self.pacer.wait(channel)
                await self.client.chat_postMessage(
                    channel=channel, text=text, blocks=answer_blocks(Answer(text))
                )
            except SlackApiError as exc:
                log.error("slack: cannot notify admin %s: %s", name, exc.response.get("error"))

    # -- listeners -------------------------------------------------------------
    def _allowed(self, channel: str) -> bool:
        return not self.settings.channels or channel in self.settings.channels

    def _refusal(self, channel: str) -> Answer:
        return Answer(
            f"deskbot does not take commands in <#{channel}>; use it in an allowed channel "
            "or in a direct message (an admin sets [slack] channels)",
            error=True,
        )

    async def _on_command(self, ack: Callable[..., Any], body: dict[str, Any]) -> None:
        channel = str(body.get("channel_id", ""))
        user_id = str(body.get("user_id", ""))
        direct = channel.startswith("D")
        log.info("slack: command from %s in %s", user_id, channel)
        if not self.accepting:
            await ack(response_type="ephemeral", text="deskbot is restarting: try again shortly")
            return
        if not direct and not self._allowed(channel):
            refusal = self._refusal(channel)
            await ack(response_type="ephemeral", text=refusal.text, blocks=answer_blocks(refusal))
            return
        user = ChatUser("slack", user_id, await self._display_name(user_id, body.get("user_name")))
        prepared = self.relay.prepare(user, from_slack(str(body.get("text", ""))), place=channel)
        if isinstance(prepared, Answer):
            await ack(response_type="ephemeral", text=prepared.text, blocks=answer_blocks(prepared))
            return
        await ack()
        job = Job(user, channel, response_url=str(body.get("response_url", "")), direct=direct)
        self._track(self._send(job, prepared), job)

    async def _on_mention(self, event: dict[str, Any]) -> None:
        text = str(event.get("text", ""))
        text = re.sub(rf"^\s*<@{re.escape(self.bot_user_id)}(\|[^>]*)?>[\s:,]*", "", text)
        self._accept_message(event, text, direct=False)

    async def _on_message(self, event: dict[str, Any]) -> None:
        # only plain messages in DMs; edits, bot posts and channel chatter are not commands
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        text = str(event.get("text", "")).strip()
        text = re.sub(rf"^<@{re.escape(self.bot_user_id)}(\|[^>]*)?>\s*", "", text)
        text = text.removeprefix(self.settings.command).strip()
        self._accept_message(event, text, direct=True)

    def _accept_message(self, event: dict[str, Any], text: str, direct: bool) -> None:
        user_id, channel = str(event.get("user", "")), str(event.get("channel", ""))
        if not user_id or user_id == self.bot_user_id or not self.accepting:
            return
        thread_ts = str(event.get("thread_ts") or event.get("ts") or "")
        log.info("slack: %s from %s in %s", "DM" if direct else "mention", user_id, channel)
        job = Job(ChatUser("slack", user_id), channel, thread_ts=thread_ts, direct=direct)
        self._track(self._answer_message(job, text), job)

    async def _answer_message(self, job: Job, text: str) -> None:
        if not job.direct and not self._allowed(job.channel):
            await self._post_answer(job, self._refusal(job.channel))
            return
        name = await self._display_name(job.user.id, None)
        job.user = replace(job.user, display_name=name)
        prepared = self.relay.prepare(job.user, from_slack(text), place=job.channel)
        if isinstance(prepared, Answer):
            await self._post_answer(job, prepared)
            return
        await self._send(job, prepared)

    def _track(self, work: Any, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(work, name=f"slack-{job.channel}")
        self.jobs[task] = job
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        if self.jobs.pop(task, None) is None or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("slack: answering a command failed", exc_info=exc)

    # -- sending -----------------------------------------------------------------
    async def _send(self, job: Job, dispatch: Dispatch) -> None:
        """Anchor (slash commands), SIP delivery, then the report in the thread."""
        delivery = asyncio.ensure_future(self.relay.deliver(dispatch))
        anchor_failed = False
        if not job.thread_ts:
            title = dispatch.title
            try:
                job.thread_ts = await self._post(
                    job.channel, title, [_section("📟 " + report.mrkdwn_escape(title))]
                )
            except SlackApiError as exc:
                error = exc.response.get("error")
                if not job.response_url:
                    await delivery  # the phones still get the text; only the answer is lost
                    raise
                if error not in NO_POST_ERRORS:
                    log.warning(
                        "slack: cannot post in %s (%s): answering privately", job.channel, error
                    )
                anchor_failed = True
        try:
            result = await delivery
        except asyncio.CancelledError:
            delivery.cancel()
            raise
        text = report.plain(result)
        blocks = report_blocks(result)
        if anchor_failed:  # the bot is not in the channel: the command's own reply channel
            title = dispatch.title
            blocks = [_section("📟 " + report.mrkdwn_escape(title)), *blocks]
            await self._respond(job, f"{title}\n{text}", blocks, in_channel=True)
        else:
            await self._post_reply(job, text, blocks)

    async def _post_answer(self, job: Job, answer: Answer) -> None:
        blocks = answer_blocks(answer)
        if job.direct:
            await self._post(job.channel, answer.text, blocks, job.thread_ts)
            return
        assert self.client is not None
        await self.client.chat_postEphemeral(
            channel=job.channel,
            user=job.user.id,
            text=answer.text,
            blocks=blocks,
            thread_ts=job.thread_ts or None,
        )

    async def _post_reply(self, job: Job, text: str, blocks: list[dict[str, Any]] | None) -> None:
        if job.thread_ts:
            await self._post(job.channel, text, blocks, job.thread_ts)
        else:
            await self._respond(job, text, blocks, in_channel=False)

    async def _post(
        self, channel: str, text: str, blocks: list[dict[str, Any]] | None, thread_ts: str = ""
    ) -> str:
        assert self.client is not None
        await self.pacer.wait(channel)
        response = await self.client.chat_postMessage(
            channel=channel,
            text=text,
            blocks=blocks,
            thread_ts=thread_ts or None,
            unfurl_links=False,
        )
        return str(response["ts"])

    async def _respond(
        self, job: Job, text: str, blocks: list[dict[str, Any]] | None, in_channel: bool
    ) -> None:
        url = job.response_url
        uses = self.response_url_uses.get(url, 0)
        if not url or uses >= RESPONSE_URL_USES:
            log.error("slack: no way left to answer %s in %s", job.user.id, job.channel)
            return
        self.response_url_uses[url] = uses + 1
        response = await AsyncWebhookClient(url).send(
            text=text,
            blocks=blocks,
            response_type="in_channel" if in_channel else "ephemeral",
        )
        if response.status_code != 200:
            log.error("slack: response_url answered %s", response.status_code)

    async def _display_name(self, user_id: str, fallback: Any) -> str:
        """users.info's display name, cached; the payload's user_name if Slack is slow."""
        if user_id in self.names:
            return self.names[user_id]
        assert self.client is not None
        try:
            info = await asyncio.wait_for(self.client.users_info(user=user_id), NAME_LOOKUP_TIMEOUT)
        except Exception as exc:  # a name is a nicety: never let it cost the command
            log.debug("slack: users.info %s: %r", user_id, exc)
            return str(fallback or "")
        user = info.get("user") or {}
        profile = user.get("profile") or {}
        name = str(
            profile.get("display_name")
            or profile.get("real_name")
            or user.get("real_name")
            or user.get("name")
            or fallback
            or ""
        )
        self.names[user_id] = name
        return name
