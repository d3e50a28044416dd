"""Planned notices (pure): template placeholders, `in 20s` / `at 14:55`, cron occurrences.

No I/O and no clock of its own: every function takes the time it works from,
so the scheduler and its tests share one code path.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, tzinfo

PLACEHOLDER_RE = re.compile(r"[a-z_][a-z0-9_]{0,31}")
DELAY_RE = re.compile(r"([0-9]{1,6})([smh])")
CLOCK_RE = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
UNIT = {"s": 1, "m": 60, "h": 3600}
MAX_DELAY = 30 * 86400  # seconds: a send planned further ahead is a schedule's job


class TemplateError(ValueError):
    """A template cannot be filled; the message names the variable."""


def placeholders(text: str) -> list[str]:
    """The ``{name}`` fields of a template, in order, once each; ValueError if malformed."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc} (write {{{{ and }}}} for braces)") from None
    names: dict[str, None] = {}
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not PLACEHOLDER_RE.fullmatch(name):
            raise ValueError(f"{{{name}}} is not a placeholder: use names like {{time}}")
        if spec or conversion:
            raise ValueError(f"{{{name}}} takes no format spec or conversion: write {{{name}}}")
        names[name] = None
    return list(names)


def fill(name: str, text: str, values: Mapping[str, str]) -> str:
    """The template's text with each placeholder replaced; TemplateError names what is off."""
    wanted = placeholders(text)
    missing = [v for v in wanted if v not in values]
    if missing:
        given = " ".join(f"{v}=..." for v in missing)
        raise TemplateError(f"template !{name} needs {', '.join(missing)}: add {given}")
    extra = [v for v in values if v not in wanted]
    if extra:
        takes = ", ".join(wanted) if wanted else "no variables"
        raise TemplateError(f"template !{name} takes {takes}, not {', '.join(extra)}")
    return text.format_map(dict(values))


def delay(word: str) -> int | None:
    """'20s' -> 20, '15m' -> 900, '2h' -> 7200; None when the word is not a delay."""
    found = DELAY_RE.fullmatch(word.lower())
    return int(found.group(1)) * UNIT[found.group(2)] if found else None


def clock(word: str) -> tuple[int, int] | None:
    """'14:55' -> (14, 55); None when the word is not a time of day."""
    found = CLOCK_RE.fullmatch(word)
    return (int(found.group(1)), int(found.group(2))) if found else None


def zone(name: str | None) -> tzinfo:
    """An IANA zone; None: the host's own (as the system clock shows it)."""
    if not name:
        local = datetime.now().astimezone().tzinfo
        assert local is not None
        return local
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def zone_problem(name: str) -> str | None:
    """What is wrong with a time zone name, or None."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not an IANA time zone (like Europe/Berlin or UTC)"
    return None


def next_at(hour: int, minute: int, now: float, where: tzinfo) -> datetime:
    """The next hour:minute in that zone: today, or tomorrow if it has passed."""
    today = datetime.fromtimestamp(now, where)
    due = today.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due.timestamp() <= now:
        due = (today + timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return due


def cron_problem(expr: str) -> str | None:
    """What is wrong with a cron expression, or None.

    Five fields are standard cron; a sixth in front gives seconds (a test hook:
    ``*/5 * * * * *`` fires every five seconds).
    """
    if len(expr.split()) not in (5, 6):
        fields = len(expr.split())
        return f"{expr!r} has {fields} fields; cron takes 5 (minute hour day month weekday)"
    from zoneinfo import ZoneInfo

    from cronsim import CronSim, CronSimError

    try:
        CronSim(expr, datetime.now(ZoneInfo("UTC")))
    except CronSimError as exc:
        return f"{expr!r} is not a valid cron expression: {exc}"
    return None


def occurrences(expr: str, where: tzinfo, after: float, until: float) -> Iterator[datetime]:
    """Each time the expression fires in (after, until], in that zone (DST as Debian cron)."""
    from cronsim import CronSim

    start = datetime.fromtimestamp(after, where)
    for when in CronSim(expr, start):
        if when.timestamp() > until:
            return
        if when.timestamp() > after:
            yield when


def shown(when: datetime, seconds: bool = False, now: float | None = None) -> str:
    """'at 14:55 CET' (with seconds 'at 14:55:20 CET'); a day other than ``now``'s says
    which: 'tomorrow at 06:55 CET', 'on Fri 2025-03-07 at 06:55 CET'."""
    clock = "at " + when.strftime("%H:%M:%S %Z" if seconds else "%H:%M %Z")
    if now is None:
        return clock
    today = datetime.fromtimestamp(now, when.tzinfo).date()
    if when.date() == today:
        return clock
    if when.date() == today + timedelta(days=1):
        return f"tomorrow {clock}"
    return f"on {when.strftime('%a %Y-%m-%d')} {clock}"


def known_zone(name: str | None, fallback: str | None) -> tuple[tzinfo, str, bool]:
    """(zone, its name, whether ``name`` was known): an unknown or malformed name from a
    platform gives way to ``fallback`` (``[message] timezone``, else the host's)."""
    from zoneinfo import ZoneInfoNotFoundError

    if name:
        try:
            return zone(name), name, True
        except (ZoneInfoNotFoundError, ValueError, OSError):
            return zone(fallback), fallback or "", False
    return zone(fallback), fallback or "", True
