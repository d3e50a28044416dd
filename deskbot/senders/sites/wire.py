"""The NATS side shared by the front and the edges: subjects, the stream, the claims.

One JetStream stream holds every site's deliveries, one subject per site; it
is a work queue (a delivery is gone once an edge acks it), with a durable
pull consumer per site that all edges of that site share. Before an edge
sends, it *claims* the delivery in a key-value bucket with create-if-absent;
when the front's patience runs out it tries the same create with "expired".
The server lets exactly one of them win, so a delivery the user was told
was not sent is never sent later, and a redelivered one already started (by
this edge or a sibling that crashed) is answered "not confirmed", not sent
again. Designed for nats-server 2.9 (Debian 12's): no per-message TTL, one
filter subject per consumer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client, RawCredentials
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from deskbot.directory.snapshot import FORMATS, MESSAGE
from deskbot.senders.base import Cause, Delivery
from deskbot.settings.schema import Nats

log = logging.getLogger("deskbot.nats")

STREAM = "DESKBOT_SITES"
SEND = "deskbot.send.{site}"  # the front publishes here (JetStream)
PING = "deskbot.ping.{site}"  # edges answer here when they can send (core request-reply)
REPLY = "deskbot.reply.{site}.{front}"  # an edge's answers to one front (core)
CLAIMS = "deskbot_claims"  # KV bucket: "SITE.ID" -> who started or expired the delivery
DUPLICATE_WINDOW = 120.0  # seconds a Nats-Msg-Id is remembered (JetStream's default)
MAX_AGE = 120.0  # no delivery waits in the stream longer than this, whatever the clocks say
CLAIM_TTL = 900.0  # seconds a claim is kept: longer than any delivery can be redelivered
ACK_WAIT = 10.0  # an edge keeps a delivery with in_progress() while its phone answers
MAX_DELIVER = 5
STARTED, EXPIRED = b"started", b"expired"
ERRORS = (nats.errors.Error, OSError, TimeoutError)  # what a NATS call raises when NATS is away


def consumer(site: str) -> str:
    return f"edge_{site}"


async def connect(settings: Nats, secret: Callable[[str], str], name: str) -> Client:
    """Connect once; afterwards the client reconnects by itself, forever."""
    options: dict[str, Any] = {}
    if settings.credentials_env:
        creds = secret(settings.credentials_env)
        options["user_credentials"] = RawCredentials(creds) if "-----BEGIN" in creds else creds
    if settings.user and settings.password_env:
        options["user"], options["password"] = settings.user, secret(settings.password_env)
    if settings.token_env:
        options["token"] = secret(settings.token_env)

    async def error_cb(exc: Exception) -> None:
        log.warning("NATS: %s", exc or type(exc).__name__)

    client = Client()

    async def disconnected_cb() -> None:
        if not client.is_closed:  # closing is no news
            log.warning("NATS: disconnected from %s; reconnecting", settings.url)

    async def reconnected_cb() -> None:
        log.info("NATS: reconnected to %s", settings.url)

    await client.connect(
        settings.url.split(","),
        name=name,
        connect_timeout=3,
        reconnect_time_wait=1,
        max_reconnect_attempts=-1,
        ping_interval=5,
        max_outstanding_pings=2,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        **options,
    )
    return client


async def ensure_stream(js: JetStreamContext) -> None:
    """The work-queue stream of every site (created by whichever process comes first)."""
    config = api.StreamConfig(
        name=STREAM,
        subjects=[SEND.format(site="*")],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        max_age=MAX_AGE,
        duplicate_window=DUPLICATE_WINDOW,
        discard=api.DiscardPolicy.OLD,
    )
    try:
        await js.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:  # a sibling created it meanwhile
            await js.stream_info(STREAM)


async def claims(js: JetStreamContext) -> KeyValue:
    try:
        return await js.key_value(CLAIMS)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(bucket=CLAIMS, history=1, ttl=CLAIM_TTL)


async def claim(kv: KeyValue, key: str, what: bytes, who: str) -> tuple[bool, bytes]:
    """Try to create the claim; (won, STARTED or EXPIRED: what holds the key now)."""
    try:
        await kv.create(key, what + b" " + who.encode())
        return True, what
    except nats.js.errors.KeyWrongLastSequenceError:
        entry = await kv.get(key)
        return False, (entry.value or b"").split(b" ")[0]


@dataclass(frozen=True, slots=True)
class Job:
    """One delivery as it travels to the edge (JSON; the text is never logged)."""

    id: str
    uri: str
    text: str
    deadline: float  # wall clock: an edge does not start it later
    format: str = MESSAGE  # how the phone takes text (SIP MESSAGE or Snom Infobox NOTIFY)

    def encode(self) -> bytes:
        record = {"id": self.id, "uri": self.uri, "text": self.text, "deadline": self.deadline}
        return json.dumps({**record, "format": self.format}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Job:
        raw = json.loads(data)
        job = cls(
            str(raw["id"]),
            str(raw["uri"]),
            str(raw["text"]),
            float(raw["deadline"]),
            str(raw.get("format", MESSAGE)),
        )
        if not job.id or len(job.id) > 200:
            raise ValueError("bad id")
        if job.format not in FORMATS:
            raise ValueError("bad format")
        return job


def encode_answer(job_id: str, d: Delivery) -> bytes:
    return json.dumps(
        {"id": job_id, "code": d.code, "reason": d.reason, "cause": d.cause.value}
    ).encode()


def decode_answer(data: bytes) -> tuple[str, int, str, Cause]:
    raw = json.loads(data)
    return str(raw["id"]), int(raw["code"]), str(raw["reason"])[:200], Cause(raw["cause"])
