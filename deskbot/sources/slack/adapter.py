"""The Slack source: bolt's AsyncApp in Socket Mode or HTTP mode, listeners, lifecycle.

In Socket Mode no inbound port is needed; in HTTP mode Slack posts to
``/slack/events`` and bolt checks the signature. Commands are acknowledged
first; the SIP work runs afterwards in tracked tasks, so Slack's 3-second
limit holds whatever the phones do and shutdown can finish or report what is
still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
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

from deskbot import notices
from deskbot.relay.relay import Relay
from deskbot.relay.values import Answer, ChatUser, Request
from deskbot.settings.schema import SlackSettings
from deskbot.sources.serve import serve
from deskbot.sources.slack import listener, wire
from deskbot.sources.slack.replies import Ack, Job, Poster, SlackReplier

log = logging.getLogger("deskbot.slack")

NAME_LOOKUP_TIMEOUT = 0.8  # users.info must not hold up the 3-second ack
SHUTDOWN_NOTICE = (
    "⚠️ deskbot stopped before every phone answered: the text may or may not have "
    "arrived. `history` shows what was recorded."
)
# bolt reads these from the environment when they are not passed; deskbot passes what
# it means to use (from the *_env names), and a stray client id/secret would switch on OAuth.
_BOLT_ENV_FALLBACKS = ("SLACK_BOT_TOKEN", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET")


@contextlib.contextmanager
def _hidden_env(names: tuple[str, ...]) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class SlackSource:
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
        self.poster: Poster | None = None
        self.names: dict[str, str] = {}
        self.zones: dict[str, str] = {}  # user id -> IANA zone from users.info
        self.jobs: dict[asyncio.Task[None], Job] = {}
        self.accepting = True
        self.client: AsyncWebClient | None = None
        self.app: AsyncApp | None = None
        self.socket: AsyncSocketModeHandler | None = None
        self.runner: web.AppRunner | None = None
        self.listener: asyncio.Server | None = None

    # -- lifecycle -------------------------------------------------------------
    @property
    def connected(self) -> bool:
        if self.socket is not None:
            client = self.socket.client
            session = client.current_session
            return not client.closed and session is not None and not session.closed
        return self.listener is not None and self.listener.is_serving()

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
        self.poster = Poster(self.client)
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
        handler = listener.checked(self.signing_secret, self._http_events)
        self.runner, self.listener = await listener.serve(
            handler, host.strip("[]") or "127.0.0.1", int(port)
        )

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
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if not self.jobs:
            return
        grace = self.relay.patience + 5.0
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
                    await asyncio.wait_for(self._poster.reply(job, SHUTDOWN_NOTICE, None), 3.0)

    async def notify_admins(self, text: str) -> None:
        if self.client is None or self.poster is None:
            return
        for user_id in self.relay.admin_ids(self.name):
            try:
                opened = await self.client.conversations_open(users=user_id)
                channel = opened["channel"]["id"]
                await self.poster.post(channel, text, wire.answer_blocks(Answer(text)))
            except SlackApiError as exc:
                log.error("slack: cannot notify admin %s: %s", user_id, exc.response.get("error"))

    @property
    def _poster(self) -> Poster:
        assert self.poster is not None, "start() first"
        return self.poster

    # -- listeners -------------------------------------------------------------
    def _allowed(self, channel: str) -> bool:
        return not self.settings.channels or channel in self.settings.channels

    def _refusal(self, channel: str) -> Answer:
        return Answer(
            "deskbot does not take commands in this channel; use it in an allowed channel "
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
            await ack(
                response_type="ephemeral",
                text=wire.fallback(refusal.text),
                blocks=wire.answer_blocks(refusal),
            )
            return
        user = ChatUser("slack", user_id, await self._display_name(user_id, body.get("user_name")))
        trigger = str(body.get("trigger_id", ""))
        request = Request(
            user,
            wire.from_slack(str(body.get("text", ""))),
            place=channel,
            key=f"slack-slash:{trigger}" if trigger else "",
            timezone=self.zones.get(user_id, ""),
        )
        job = Job(user, channel, response_url=str(body.get("response_url", "")), direct=direct)
        self._track(self._serve(request, job, ack), job)

    async def _on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        text = str(event.get("text", ""))
        text = re.sub(rf"^\s*<@{re.escape(self.bot_user_id)}(\|[^>]*)?>[\s:,]*", "", text)
        self._accept_message(event, body, text, direct=False)

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        # only plain messages in DMs; edits, bot posts and channel chatter are not commands
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        text = str(event.get("text", "")).strip()
        text = re.sub(rf"^<@{re.escape(self.bot_user_id)}(\|[^>]*)?>\s*", "", text)
        text = text.removeprefix(self.settings.command).strip()
        self._accept_message(event, body, text, direct=True)

    def _accept_message(
        self, event: dict[str, Any], body: dict[str, Any], text: str, direct: bool
    ) -> None:
        user_id, channel = str(event.get("user", "")), str(event.get("channel", ""))
        if not user_id or user_id == self.bot_user_id or not self.accepting:
            return
        thread_ts = str(event.get("thread_ts") or event.get("ts") or "")
        log.info("slack: %s from %s in %s", "DM" if direct else "mention", user_id, channel)
        job = Job(ChatUser("slack", user_id), channel, thread_ts=thread_ts, direct=direct)
        # Slack delivers an event again when its first delivery was not acknowledged in time
        event_id = str(body.get("event_id", ""))
        key = f"slack-event:{event_id}" if event_id else ""
        sent_at = body.get("event_time")
        when = float(sent_at) if isinstance(sent_at, int | float) else None
        self._track(self._answer_message(job, text, key, when), job)

    async def _answer_message(self, job: Job, text: str, key: str, sent_at: float | None) -> None:
        if not job.direct and not self._allowed(job.channel):
            await self._poster.answer(job, self._refusal(job.channel))
            return
        name = await self._display_name(job.user.id, None)
        job.user = replace(job.user, display_name=name)
        request = Request(
            job.user,
            wire.from_slack(text),
            job.channel,
            key,
            sent_at,
            thread=job.thread_ts,
            timezone=self.zones.get(job.user.id, ""),
        )
        await self._serve(request, job)

    async def _serve(self, request: Request, job: Job, ack: Ack | None = None) -> None:
        replier = SlackReplier(
            self._poster, job, ack, on_anchor=lambda ts: self.relay.threaded(request, ts)
        )
        try:
            await serve(self.relay, request, replier)
        finally:
            await replier.ack()  # a repeated command is answered by nothing but the ack

    def replier_for(self, user: ChatUser, place: str, thread: str, key: str) -> SlackReplier:
        """A later answer: in the thread of a mention or DM; a slash command's gets an anchor."""
        job = Job(user, place, thread_ts=thread, direct=place.startswith("D"))
        replier = SlackReplier(self._poster, job, later=True)
        if not thread:
            replier.waiting_after = 0.0  # post the anchor message the report threads under
        return replier

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
        zone = user.get("tz")
        if isinstance(zone, str) and notices.zone_problem(zone) is None:
            self.zones[user_id] = zone
        return name
