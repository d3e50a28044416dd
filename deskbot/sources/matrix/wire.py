"""Matrix wire translation (pure): event content -> command text, report -> event content."""

from __future__ import annotations

import hashlib
import html
import re
import urllib.parse
from typing import Any

from deskbot.relay import report

MAX_READ = 16_000  # characters of an event read for a command: a command is far shorter


def _mapping(value: object) -> dict[str, Any]:
    """Event fields are untrusted: anything that is not an object reads as an empty one."""
    return value if isinstance(value, dict) else {}


def command_text(
    content: object, body: object, prefix: str, direct: bool, mentions: bool = True
) -> str | None:
    """What follows the command prefix, or None when the message is not for the bot.

    ``direct``: a room of two, where the prefix may be left out. ``mentions``:
    read mention pills from the HTML body (only for senders the relay allows).
    """
    content = _mapping(content)
    if content.get("msgtype") != "m.text" or not isinstance(body, str):
        return None
    if _mapping(content.get("m.relates_to")).get("rel_type") == "m.replace":
        return None  # edits are not new commands
    text = (with_mentions(content) if mentions else "") or strip_reply_fallback(
        body[:MAX_READ]
    ).strip()
    if text.lower() == prefix.lower():
        return ""
    if text.lower().startswith(prefix.lower()) and text[len(prefix)].isspace():
        return text[len(prefix) :].strip()
    if direct:
        return text
    return None


def thread_root(command: object, event_id: str) -> str:
    """The thread a command is in: its own event when it starts one."""
    relates = _mapping(_mapping(command).get("m.relates_to"))
    root = relates.get("event_id")
    if relates.get("rel_type") != "m.thread" or not isinstance(root, str) or not root:
        return event_id
    return root


def thread_reply(command: object, event_id: str, text: str) -> dict[str, Any]:
    """A notice in the command's thread, with a reply fallback for clients without threads."""
    root = thread_root(command, event_id)
    return {
        **notice(text),
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": event_id},
        },
    }


def notice(text: str) -> dict[str, Any]:
    """An m.notice; the empty ``m.mentions`` keeps ``@room`` in echoed text from notifying."""
    return {
        "msgtype": "m.notice",
        "m.mentions": {},
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": report.to_html(text),
    }


def reaction(event_id: str, key: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}


_PILL_HREF = re.compile(r'href="https://matrix\.to/#/(@[^"?/]{1,255})')


def with_mentions(content: dict[str, Any]) -> str:
    """The text with mention pills as Matrix ids (``@bob:example.com``), or "" if none.

    Clients put a person's display name in the plain body, which may hold
    spaces; the HTML body links the id, which the directory knows. One pass
    over at most MAX_READ characters: no pattern that could backtrack.
    """
    formatted = content.get("formatted_body")
    if content.get("format") != "org.matrix.custom.html" or not isinstance(formatted, str):
        return ""
    formatted = formatted[:MAX_READ]
    if "matrix.to/#/@" not in formatted:
        return ""
    out: list[str] = []
    in_reply = in_pill = False
    pos = 0
    while pos < len(formatted):
        start = formatted.find("<", pos)
        text = formatted[pos:] if start < 0 else formatted[pos:start]
        if not (in_reply or in_pill):
            out.append(text)
        if start < 0:
            break
        end = formatted.find(">", start)
        if end < 0:
            break  # an unclosed tag: the rest is not text
        tag = formatted[start + 1 : end]
        pos = end + 1
        name = tag.split(None, 1)[0].lower().rstrip("/") if tag.strip() else ""
        if name == "mx-reply":
            in_reply = True
        elif name == "/mx-reply":
            in_reply = False
        elif name == "a" and not in_reply and (pill := _PILL_HREF.search(tag)):
            out.append(urllib.parse.unquote(pill.group(1)))
            in_pill = True
        elif name == "/a":
            in_pill = False
        elif name == "br" and not (in_reply or in_pill):
            out.append("\n")
    return html.unescape("".join(out)).strip()


_FALLBACK = re.compile(r"\A(?:> [^\n]*\n)+\n?")


def strip_reply_fallback(body: str) -> str:
    """Drop the `> <@user> quoted` lines clients put in front of a reply."""
    return _FALLBACK.sub("", body, count=1) if body.startswith("> ") else body


def tx_id(event_id: str, purpose: str) -> str:
    """A transaction id fixed by the command and what is sent for it (URL-safe)."""
    digest = hashlib.sha256(f"{event_id}\0{purpose}".encode()).hexdigest()[:32]
    return f"deskbot-{digest}"
