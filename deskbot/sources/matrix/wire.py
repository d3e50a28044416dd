"""Matrix wire translation (pure): event content -> command text, report -> event content."""

from __future__ import annotations

import hashlib
import html
import re
import urllib.parse
from typing import Any

from deskbot import report


def command_text(content: dict[str, Any], body: str, prefix: str, direct: bool) -> str | None:
    """What follows the command prefix, or None when the message is not for the bot.

    ``direct``: a room of two, where the prefix may be left out.
    """
    if content.get("msgtype") != "m.text":
        return None
    if content.get("m.relates_to", {}).get("rel_type") == "m.replace":
        return None  # edits are not new commands
    text = with_mentions(content) or strip_reply_fallback(body).strip()
    if text.lower() == prefix.lower():
        return ""
    if text.lower().startswith(prefix.lower()) and text[len(prefix)].isspace():
        return text[len(prefix) :].strip()
    if direct:
        return text
    return None


def thread_reply(command: dict[str, Any], event_id: str, text: str) -> dict[str, Any]:
    """A notice in the command's thread, with a reply fallback for clients without threads."""
    relates = command.get("m.relates_to", {})
    in_thread = relates.get("rel_type") == "m.thread" and relates.get("event_id")
    root = relates["event_id"] if in_thread else event_id
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
    return {
        "msgtype": "m.notice",
        "body": text,
        "format": "org.matrix.custom.html",
        "formatted_body": report.to_html(text),
    }


def reaction(event_id: str, key: str) -> dict[str, Any]:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}


_PILL = re.compile(r'<a\s[^>]*href="https://matrix\.to/#/(@[^"?/]+)[^"]*"[^>]*>.*?</a>', re.S)


def with_mentions(content: dict[str, Any]) -> str:
    """The text with mention pills as Matrix ids (``@bob:example.com``), or "" if none.

    Clients put a person's display name in the plain body, which may hold
    spaces; the HTML body links the id, which the directory knows.
    """
    formatted = content.get("formatted_body")
    if content.get("format") != "org.matrix.custom.html" or not isinstance(formatted, str):
        return ""
    if "matrix.to/#/@" not in formatted:
        return ""
    text = re.sub(r"<mx-reply>.*?</mx-reply>", "", formatted, flags=re.S)
    text = _PILL.sub(lambda m: urllib.parse.unquote(m.group(1)), text)
    text = re.sub(r"<br\s*/?>", "\n", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


_FALLBACK = re.compile(r"\A(?:> [^\n]*\n)+\n?")


def strip_reply_fallback(body: str) -> str:
    """Drop the `> <@user> quoted` lines clients put in front of a reply."""
    return _FALLBACK.sub("", body, count=1) if body.startswith("> ") else body


def tx_id(event_id: str, purpose: str) -> str:
    """A transaction id fixed by the command and what is sent for it (URL-safe)."""
    digest = hashlib.sha256(f"{event_id}\0{purpose}".encode()).hexdigest()[:32]
    return f"deskbot-{digest}"
