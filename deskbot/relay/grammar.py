"""Chat text -> Command (pure). The same grammar for Slack, Matrix, console and shell."""

from __future__ import annotations

import re
import shlex
import unicodedata
from dataclasses import dataclass, replace

from deskbot import notices


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
    confirm: bool = False  # `confirm TARGETS TEXT`: each phone is asked for an OK


@dataclass(frozen=True, slots=True)
class Probe:
    targets: str


@dataclass(frozen=True, slots=True)
class UseTemplate:
    """`[TARGETS] !NAME key=value...`: a template's text; targets None: the template's own."""

    targets: str | None
    name: str
    values: tuple[tuple[str, str], ...] = ()
    confirm: bool = False  # `confirm TARGETS !NAME ...`


@dataclass(frozen=True, slots=True)
class Later:
    """`in 20s ...` (delay, seconds) or `at 14:55 ...` (clock): a send carried out later.

    ``then`` is the send's own command text (`486 hello`, `!firedrill time=3pm`), kept
    until its time and read again then.
    """

    then: str
    delay: int | None = None
    clock: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Templates:
    pass


@dataclass(frozen=True, slots=True)
class Scheduled:
    pass


@dataclass(frozen=True, slots=True)
class Cancel:
    id: int


Command = Help | Who | History | Send | Probe | UseTemplate | Later | Templates | Scheduled | Cancel

USAGE = "usage: TARGETS TEXT (like `486 meeting moved`), `who TARGET`, `history` or `help`"
PROBE_USAGE = "usage: `probe TARGETS`, like `probe 486` or `probe @sales` (admins)"
CONFIRM_USAGE = "usage: `confirm TARGETS TEXT` or `confirm TARGETS !TEMPLATE key=value...`"
LATER_USAGE = "usage: `in 20s|15m|2h TARGETS TEXT` or `at 14:55 TARGETS TEXT`"


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
    if keyword == "templates" and not rest:
        return Templates()
    if keyword == "scheduled" and not rest:
        return Scheduled()
    if keyword == "cancel":
        if not rest.isdigit():
            raise UsageError("usage: `cancel ID`, with the id `scheduled` shows")
        return Cancel(int(rest))
    if keyword == "confirm":
        asked = parse(rest) if rest else None
        if isinstance(asked, Send | UseTemplate):
            return replace(asked, confirm=True)
        raise UsageError(CONFIRM_USAGE)
    if keyword in ("in", "at") and rest:
        when, _, then = rest.partition(" ")
        later = _later(keyword, when, then.strip())
        if later is not None:
            return later
    if head.startswith("!") and len(head) > 1:
        return _template(None, head[1:], rest)
    if rest.startswith("!!"):  # `486 !!important`: text that starts with "!"
        rest = rest[1:]
    elif rest.startswith("!") and len(rest) > 1:
        name, _, values = rest[1:].partition(" ")
        return _template(head, name, values)
    body = clean_text(rest)
    if not body:
        raise UsageError(f"nothing to send to {head}: {USAGE}")
    return Send(head, body)


# what a person writes meaning a time the grammar does not take: told, not sent to "at"
ALMOST_CLOCK = re.compile(
    r"[0-9]{1,2}([:.h][0-9]{1,2})?\s?[ap]\.?m\.?|[0-9]{1,2}[.h:][0-9]{1,2}", re.I
)
ALMOST_DELAY = re.compile(
    r"[0-9]{1,6}\s?(sec|secs|seconds?|mins?|minutes?|hrs?|hours?|d|days?)", re.I
)


def _later(keyword: str, when: str, then: str) -> Later | None:
    """None when `when` is no time (`in` or `at` may then be a target's name)."""
    seconds = notices.delay(when) if keyword == "in" else None
    hour_minute = notices.clock(when) if keyword == "at" else None
    if seconds is None and hour_minute is None:
        if keyword == "at" and ALMOST_CLOCK.fullmatch(when):
            raise UsageError(f"`at {when}`: write the time as HH:MM, 24-hour, like `at 15:00`")
        if keyword == "in" and ALMOST_DELAY.fullmatch(when):
            raise UsageError(f"`in {when}`: write the delay like `in 20s`, `in 15m` or `in 2h`")
        return None
    if seconds is not None and not 0 < seconds <= notices.MAX_DELAY:
        raise UsageError(f"`in {when}`: give a delay from 1s to {notices.MAX_DELAY // 86400} days")
    if not isinstance(parse(then) if then else None, Send | UseTemplate):
        raise UsageError(f"`{keyword} {when}` needs a send after it: {LATER_USAGE}")
    return Later(then, seconds, hour_minute)


def _template(targets: str | None, name: str, rest: str) -> UseTemplate:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        why = f'!{name}: {exc}; quote values with spaces like place="room 3"'
        raise UsageError(why) from None
    values: dict[str, str] = {}
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise UsageError(f"!{name}: {word!r} is not key=value (like time=3pm)")
        values[key] = one_line(clean_text(value), 1000)
    return UseTemplate(targets, name, tuple(values.items()))
