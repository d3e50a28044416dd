"""Chat text -> Command (pure). The same grammar for Slack, Matrix, console and shell."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


class UsageError(ValueError):
    """The text is not a command; the message says what to type instead."""


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class Who:
    target: str


@dataclass(frozen=True, slots=True)
class History:
    everyone: bool = False


@dataclass(frozen=True, slots=True)
class Send:
    targets: str
    text: str


@dataclass(frozen=True, slots=True)
class Probe:
    targets: str


Command = Help | Who | History | Send | Probe

USAGE = "usage: TARGETS TEXT (like `486 meeting moved`), `who TARGET`, `history` or `help`"
PROBE_USAGE = "usage: `probe TARGETS`, like `probe 486` or `probe @sales` (admins)"


def clean_text(text: str) -> str:
    """Drop control characters except line breaks and tabs; trim the ends."""
    kept = (
        c
        for c in text.replace("\r\n", "\n").replace("\r", "\n")
        if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )
    return "".join(kept).strip()


def one_line(text: str, limit: int = 40) -> str:
    """A name for the phone's screen: one line, no control or bidi characters, at most limit."""
    kept = "".join(
        " " if c.isspace() else c
        for c in text
        if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )
    return " ".join(kept.split())[:limit].strip()


def parse(text: str) -> Command:
    """Parse what follows the command word (``/deskphone``, ``!deskphone``)."""
    words = text.split(None, 1)
    if not words:
        raise UsageError(USAGE)
    head = words[0]
    rest = words[1].strip() if len(words) > 1 else ""
    keyword = head.lower()
    if keyword in ("help", "-h", "--help", "?"):
        return Help()
    if keyword == "who":
        if not rest or len(rest.split()) != 1:
            raise UsageError("usage: `who TARGET`, like `who 486`, `who alice` or `who @sales`")
        return Who(rest)
    if keyword == "history":
        if rest.lower() not in ("", "all"):
            raise UsageError("usage: `history` (your sends) or `history all` (admins)")
        return History(everyone=rest.lower() == "all")
    if keyword == "probe":
        if not rest or len(rest.split()) != 1:
            raise UsageError(PROBE_USAGE)
        return Probe(rest)
    body = clean_text(rest)
    if not body:
        raise UsageError(f"nothing to send to {head}: {USAGE}")
    return Send(head, body)
