"""Slack wire translation (pure): escaped message text -> command text, answers -> Block Kit."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

from deskbot.relay import report
from deskbot.relay.values import Answer

SECTION_CHARS = 2900  # a section block's text takes 3000 characters

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


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def answer_blocks(answer: Answer) -> list[dict[str, Any]]:
    """Answers are written with `code` spans and bullets, which mrkdwn reads as they are;
    what they echo (a target, a reason phrase) is escaped, so it cannot ping or link."""
    text = fallback(report.answer_text(answer.text, answer.error))
    return [section(chunk) for chunk in _chunks(text)][:50]


def fallback(text: str) -> str:
    """A message's plain ``text``: Slack reads it as mrkdwn too (``<!channel>`` pings)."""
    return report.mrkdwn_escape(text)


def report_blocks(result: report.Report) -> list[dict[str, Any]]:
    lines = [report.mrkdwn_escape(report.line_text(ln)) for ln in result.lines]
    blocks = [section(chunk) for chunk in _chunks("\n".join(lines))][:49]
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
