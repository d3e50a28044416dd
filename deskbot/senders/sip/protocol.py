"""The line protocol between deskbot and its SIP worker process (version 2).

One JSON object per line. Parent -> worker: the first line is the start
settings, then ``{"op": "send", "items": [[id, uri, body, kind], ...]}`` and
``{"op": "stop"}``. ``kind`` says which request carries ``body``: one of
KINDS (a missing kind is "message"); the worker alone maps it to a SIP method,
content type and headers, so nothing the parent sends can become a header.
Worker -> parent: ``ready`` (v, port, pid) or ``error`` (msg), then ``done``
(items of [id, code, reason, local]), ``reg`` (code, reason, active), ``log``
(level, msg) and finally ``stopped``. Sends are batched both ways so a
1,000-phone broadcast is a handful of writes.

Every line the worker writes is valid UTF-8 whatever a phone sent: text from
the network is decoded leniently, stripped of control characters and bounded
(reasons to MAX_REASON_CHARS, log messages to MAX_LOG_CHARS) by the worker.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = 2
MESSAGE, INFOBOX, OPTIONS = "message", "snom-infobox", "options"
SNOM_XML, YEALINK_XML = "snom-xml", "yealink-xml"
NOTIFY_KINDS = (INFOBOX, SNOM_XML, YEALINK_XML)  # a NOTIFY whose content type and Event
KINDS = (MESSAGE, OPTIONS, *NOTIFY_KINDS)  # the worker takes from the kind alone
MAX_BODY_BYTES = 1200  # over ~1300 bytes pjsip switches UDP to TCP silently
MAX_PENDING = 240  # transactions the worker keeps open at once (200 slots + reserve)
MAX_REASON_CHARS = 120  # a phone's reason phrase as reported; longer ones are cut
MAX_LOG_CHARS = 4000  # one pjsip log message (a whole SIP message fits)
MAX_TCP = 60  # connections in flight over TCP (pjsip handles ~64 sockets)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """One line -> message; anything that is not a JSON object is an empty message."""
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}
