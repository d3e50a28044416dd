"""A confirmed alert silenced in its client's Alertmanager (API v2), for ``silence_on_confirm``.

The API client that sent the alert names its ``alertmanager`` in the config;
only that URL is ever called (never the notification's ``externalURL``, and
no redirect is followed). The silence matches the labels the alert's firing
alerts share, kept with the command's confirmation thread, from now for
``silence_on_confirm``, created by "deskbot" with a comment naming the phone
that confirmed. The call is bounded (a timeout, a small response read); a
failure is logged and told in the thread, never raised.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from deskbot.settings.schema import ApiClient
from deskbot.store.base import FollowUp

log = logging.getLogger("deskbot.silences")

TIMEOUT = 5.0  # seconds for the whole call
MAX_RESPONSE = 64 * 1024  # bytes of Alertmanager's answer read at most
SILENCE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


def span(seconds: float) -> str:
    """``2h``, ``90m``, ``45s``: how long, as the config says it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


class Silencer:
    def __init__(self, clients: Callable[[], Mapping[str, ApiClient]], timeout: float = TIMEOUT):
        self.clients = clients  # read at each press: a reload's config counts
        self.timeout = timeout

    def wanted(self, follow: FollowUp | None) -> ApiClient | None:
        """The client whose Alertmanager a press of this command silences, if any."""
        if follow is None or not follow.client or not follow.labels:
            return None
        client = self.clients().get(follow.client)
        return client if client is not None and client.silence_seconds > 0 else None

    async def silence(self, follow: FollowUp | None, phone: str, command_id: int) -> str:
        """What the thread is told ("" when nothing is to be silenced)."""
        client = self.wanted(follow)
        if client is None or follow is None or not client.alertmanager:
            return ""
        import aiohttp

        seconds = client.silence_seconds
        now = datetime.now(UTC)
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in follow.labels
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(seconds=seconds)).isoformat(),
            "createdBy": "deskbot",
            "comment": f"confirmed at desk phone {phone} (deskbot command {command_id})",
        }
        url = client.alertmanager.rstrip("/") + "/api/v2/silences"
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.post(url, json=body, allow_redirects=False) as resp,
            ):
                answer = await resp.content.read(MAX_RESPONSE)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            log.warning("command %d: no silence in %s: %s", command_id, url, why[:200])
            return f"not silenced in Alertmanager: it cannot be reached ({why[:120]})"
        if status != 200:
            log.warning("command %d: no silence in %s: answered %d", command_id, url, status)
            return f"not silenced in Alertmanager: it answered {status}"
        try:
            found = json.loads(answer).get("silenceID", "")
        except (ValueError, AttributeError):
            found = ""
        shown = f" ({found})" if isinstance(found, str) and SILENCE_ID.fullmatch(found) else ""
        log.info("command %d: silenced in %s for %s%s", command_id, url, span(seconds), shown)
        return f"silenced in Alertmanager for {span(seconds)}{shown}"
