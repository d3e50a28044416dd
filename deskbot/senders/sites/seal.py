"""Signed jobs and answers between the front and a site's edges.

Anyone who can publish on the NATS server must not be able to ring a phone
or to answer for one. Each message is ``MAC.BODY``: BODY is a JSON object,
MAC the hex HMAC-SHA256 of its kind ("job", "probe" or "answer"), the site and BODY
under that site's key, which only the front and that site's edges hold
(``[nats] site_keys_env``, else ``key_env``). The kind and site in the MAC
keep a job from passing as an answer and one site's message from passing at
another. A captured job replayed is stopped by its claim and its deadline
(``wire``), not here.

Nothing is parsed before the size and the MAC are checked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from deskbot.settings.schema import Nats

MAX_BYTES = 16 << 10  # a job (1,200 bytes of text at most, escaped) or an answer fits easily
JOB, ANSWER, PROBE = b"job", b"answer", b"probe"


class Refused(ValueError):
    """A message that is too big, unsigned, signed with another key or of the wrong shape."""


def site_key(settings: Nats, secret: Callable[[str], str], site: str) -> bytes:
    """The key of one site: its own if ``site_keys_env`` names one, else ``key_env``'s."""
    env_name = settings.site_keys_env.get(site) or settings.key_env
    if env_name is None:  # check-config refuses a [nats] table without key_env
        raise Refused("no key")
    return secret(env_name).encode()


def _mac(kind: bytes, key: bytes, site: str, body: bytes) -> bytes:
    signed = kind + b"\0" + site.encode() + b"\0" + body
    return hmac.new(key, signed, hashlib.sha256).hexdigest().encode()


def seal(kind: bytes, key: bytes, site: str, record: dict[str, Any]) -> bytes:
    body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
    return _mac(kind, key, site, body) + b"." + body


def unseal(kind: bytes, key: bytes, site: str, data: bytes) -> dict[str, Any]:
    """The JSON object ``data`` carries, if ``key`` signed it as ``kind`` for ``site``."""
    if len(data) > MAX_BYTES:
        raise Refused(f"larger than {MAX_BYTES} bytes")
    mac, dot, body = data.partition(b".")
    if not dot or not hmac.compare_digest(mac, _mac(kind, key, site, body)):
        raise Refused("not signed with this site's key")
    try:
        record = json.loads(body)
    except (ValueError, RecursionError):
        raise Refused("not JSON") from None
    if not isinstance(record, dict):
        raise Refused("not a JSON object")
    return record
