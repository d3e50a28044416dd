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

import logging
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client, RawCredentials
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from deskbot.directory.snapshot import FORMATS, MESSAGE
from deskbot.loglimit import RateLimitedLog
from deskbot.senders.base import Cause, Delivery
from deskbot.senders.sites import seal
from deskbot.settings.schema import Nats

log = logging.getLogger("deskbot.nats")

STREAM = "DESKBOT_SITES"
SEND = "deskbot.send.{site}"  # the front publishes here (JetStream)
# edges answer here when they can send (core request-reply); a signed probe asked here is
# answered with the phone's answer to a SIP OPTIONS (no claim: a probe shows nothing)
PING = "deskbot.ping.{site}"
REPLY = "deskbot.reply.{site}.{front}"  # an edge's answers to one front (core)
CLAIMS = "deskbot_claims"  # KV bucket: "SITE.ID" -> who started or expired the delivery
DUPLICATE_WINDOW = 120.0  # seconds a Nats-Msg-Id is remembered (JetStream's default)
MAX_AGE = 120.0  # no delivery waits in the stream longer than this, whatever the clocks say
CLAIM_TTL = 900.0  # seconds a claim is kept: longer than any delivery can be redelivered
ACK_WAIT = 10.0  # an edge keeps a delivery with in_progress() while its phone answers
MAX_DELIVER = 5
STARTED, EXPIRED = b"started", b"expired"
ERRORS = (nats.errors.Error, OSError, TimeoutError)  # what a NATS call raises when NATS is away


JETSTREAM_OFF = (
    "the NATS server has JetStream off: start nats-server with -js "
    "(or a jetstream {} block in its config)"
)


def why(exc: BaseException) -> str:
    """What went wrong with NATS, in words a person can act on."""
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):  # no JetStream API responds
        return JETSTREAM_OFF
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def consumer(site: str) -> str:
    return f"edge_{site}"


async def connect(
    settings: Nats, secret: Callable[[str], str], name: str, inbox: str = "_INBOX"
) -> Client:
    """Connect once; afterwards the client reconnects by itself, forever.

    An edge's replies come to an inbox of its site's own (``_INBOX_SITE``), so
    per-site permissions need not let one office read every inbox."""
    options: dict[str, Any] = {}
    errors = RateLimitedLog(log)  # a refused login is reported on every reconnect
    if settings.credentials_env:
        creds = secret(settings.credentials_env)
        options["user_credentials"] = RawCredentials(creds) if "-----BEGIN" in creds else creds
    if settings.user and settings.password_env:
        options["user"], options["password"] = settings.user, secret(settings.password_env)
    if settings.token_env:
        options["token"] = secret(settings.token_env)

    async def error_cb(exc: Exception) -> None:
        errors.warning("NATS: %s", why(exc))

    client = Client()

    async def disconnected_cb() -> None:
        if not client.is_closed:  # closing is no news
            log.warning("NATS: disconnected from %s; reconnecting", settings.url)

    async def reconnected_cb() -> None:
        log.info("NATS: reconnected to %s", settings.url)

    await client.connect(
        settings.url.split(","),
        name=name,
        inbox_prefix=inbox,
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


JOB_ID = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16): not guessable, not counted
FRONT_ID = re.compile(r"[0-9a-f]{12}")
MAX_TEXT_CHARS = 4000  # far over what fits one SIP body; the edge's agent refuses the rest
MAX_URI_CHARS = 512
MAX_REASON_CHARS = 200
MAX_AHEAD = 120.0  # seconds: no job's deadline lies further ahead (take_within is at most 60)


def new_job_id() -> str:
    return secrets.token_hex(16)


def _text(raw: dict[str, Any], key: str, most: int) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or len(value) > most:
        raise seal.Refused(f"{key}: not a string of at most {most} characters")
    return value


def printable(text: str, most: int = MAX_REASON_CHARS) -> str:
    """Text from another process, as one line: control, format and bidi characters become
    spaces, and it is cut to ``most`` characters."""
    text = text[:most]
    return text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)


@dataclass(frozen=True, slots=True)
class Job:
    """One delivery as it travels to the edge (signed JSON; the text is never logged)."""

    id: str
    site: str
    uri: str
    text: str
    deadline: float  # wall clock: an edge does not start it later
    reply: str  # the front's reply subject for this site
    format: str = MESSAGE  # how the phone takes text (SIP MESSAGE or Snom Infobox NOTIFY)

    def encode(self, key: bytes) -> bytes:
        record = {
            "id": self.id,
            "site": self.site,
            "uri": self.uri,
            "text": self.text,
            "deadline": self.deadline,
            "reply": self.reply,
            "format": self.format,
        }
        return seal.seal(seal.JOB, key, self.site, record)

    @classmethod
    def decode(cls, data: bytes, key: bytes, site: str, now: float) -> Job:
        """A job for ``site`` signed with its key, every field checked; else seal.Refused."""
        raw = seal.unseal(seal.JOB, key, site, data)
        job_id, deadline = _id_and_deadline(raw, site, now)
        reply = _text(raw, "reply", 100)
        front = reply.removeprefix(REPLY.format(site=site, front=""))
        if front == reply or not FRONT_ID.fullmatch(front):
            raise seal.Refused("reply: not a reply subject of this site")
        format = raw.get("format")
        if format not in FORMATS:
            raise seal.Refused("format: not a phone format")
        uri = _text(raw, "uri", MAX_URI_CHARS)
        text = _text(raw, "text", MAX_TEXT_CHARS)
        return cls(job_id, site, uri, text, deadline, reply, str(format))


def _id_and_deadline(raw: dict[str, Any], site: str, now: float) -> tuple[str, float]:
    """A job's or probe's id, site and deadline, checked."""
    job_id = _text(raw, "id", 32)
    if not JOB_ID.fullmatch(job_id):
        raise seal.Refused("id: not a job id")
    if raw.get("site") != site:
        raise seal.Refused("site: another site's job")
    deadline = raw.get("deadline")
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise seal.Refused("deadline: not a number")
    if not math.isfinite(deadline) or deadline > now + MAX_AHEAD:
        raise seal.Refused("deadline: not a time in the next two minutes or before")
    return job_id, float(deadline)


def encode_probe(key: bytes, site: str, probe_id: str, uri: str, deadline: float) -> bytes:
    record = {"id": probe_id, "site": site, "uri": uri, "deadline": deadline}
    return seal.seal(seal.PROBE, key, site, record)


def decode_probe(data: bytes, key: bytes, site: str, now: float) -> tuple[str, str]:
    """(probe id, phone URI) of a probe for ``site`` signed with its key and not yet past its
    deadline (a captured probe asked again later is refused); else seal.Refused."""
    raw = seal.unseal(seal.PROBE, key, site, data)
    probe_id, deadline = _id_and_deadline(raw, site, now)
    if now > deadline:
        raise seal.Refused("deadline: passed")
    return probe_id, _text(raw, "uri", MAX_URI_CHARS)


def encode_answer(key: bytes, site: str, job_id: str, d: Delivery) -> bytes:
    record = {"id": job_id, "site": site, "code": d.code, "reason": d.reason}
    return seal.seal(seal.ANSWER, key, site, {**record, "cause": d.cause.value})


def decode_answer(data: bytes, key: bytes, site: str) -> tuple[str, int, str, Cause]:
    """(job id, code, reason, cause) of an answer ``site``'s key signed; else seal.Refused.

    Bounded as the SIP worker's answers are: a code is a SIP code (or 0), a reason one
    printable line."""
    raw = seal.unseal(seal.ANSWER, key, site, data)
    job_id = _text(raw, "id", 32)
    if not JOB_ID.fullmatch(job_id) or raw.get("site") != site:
        raise seal.Refused("id or site: not a job of this site")
    code = raw.get("code")
    if isinstance(code, bool) or not isinstance(code, int) or not (code == 0 or 100 <= code <= 699):
        raise seal.Refused("code: not a SIP code")
    reason = printable(_text(raw, "reason", 4 * MAX_REASON_CHARS))
    try:
        cause = Cause(str(raw.get("cause")))
    except ValueError:
        raise seal.Refused("cause: unknown") from None
    return job_id, code, reason, cause
