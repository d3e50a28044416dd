"""check-config for templates and schedules: what `[templates]` and `[schedules]` may hold."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from deskbot import notices

if TYPE_CHECKING:
    from deskbot.settings.schema import Settings

NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
REPORT_TO_RE = re.compile(r"(matrix:![^\s]+|slack:[CGD][A-Z0-9]{2,}|console)")


def problems(s: Settings) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if s.message.timezone and (why := notices.zone_problem(s.message.timezone)):
        found.append(("message.timezone", why))
    for name, template in s.templates.items():
        key = f"templates.{name}"
        if not NAME_RE.fullmatch(name):
            found.append((key, "names are lower-case letters, digits, . _ -"))
        try:
            notices.placeholders(template.text)
        except ValueError as exc:
            found.append((f"{key}.text", str(exc)))
        if template.targets is not None:
            found += _targets(s, f"{key}.targets", template.targets)
        found += _escalation(s, key, template.confirm, template.escalate_to)
    for name in s.schedules:
        found += _schedule(s, name)
    for name, client in (s.api.clients if s.api else {}).items():
        if client.silence_on_confirm and not client.alertmanager:
            why = "silences a confirmed alert in the client's alertmanager: give its URL"
            found.append((f"api.clients.{name}.silence_on_confirm", why))
    return found


def _schedule(s: Settings, name: str) -> list[tuple[str, str]]:
    key, schedule = f"schedules.{name}", s.schedules[name]
    found: list[tuple[str, str]] = []
    if why := notices.cron_problem(schedule.cron):
        found.append((f"{key}.cron", why))
    if schedule.timezone and (why := notices.zone_problem(schedule.timezone)):
        found.append((f"{key}.timezone", why))
    targets = schedule.targets
    if (schedule.text is None) == (schedule.template is None):
        found.append((key, "give either text or template (with vars)"))
    elif schedule.template is not None:
        template = s.templates.get(schedule.template)
        if template is None:
            found.append((f"{key}.template", f"{schedule.template!r} is not in [templates]"))
        else:
            targets = targets or template.targets
            try:
                notices.fill(schedule.template, template.text, schedule.vars)
            except ValueError as exc:
                found.append((f"{key}.vars", str(exc)))
    elif schedule.vars:
        found.append((f"{key}.vars", "vars go with template, not text"))
    template = s.templates.get(schedule.template or "")
    confirm = schedule.confirm or bool(template and template.confirm)
    found += _escalation(s, key, confirm, schedule.escalate_to)
    if targets is None:
        found.append((f"{key}.targets", "required key is missing (the template has none)"))
    elif schedule.targets is not None:
        found += _targets(s, f"{key}.targets", schedule.targets)
    if schedule.report_to is not None and not REPORT_TO_RE.fullmatch(schedule.report_to):
        found.append(
            (
                f"{key}.report_to",
                f"{schedule.report_to!r}: use matrix:!ROOM_ID, slack:CHANNEL_ID or console",
            )
        )
    return found


def _escalation(
    s: Settings, key: str, confirm: bool, escalate_to: str | None
) -> list[tuple[str, str]]:
    if escalate_to is None:
        return []
    if not confirm:
        return [(f"{key}.escalate_to", "tells who did not confirm: it needs confirm = true")]
    return _targets(s, f"{key}.escalate_to", escalate_to)


def _targets(s: Settings, key: str, targets: str) -> list[tuple[str, str]]:
    """Each part of a targets token must be a phone, person or group of the file."""
    domain = bool(s.sip.registrar and s.sip.registrar.domain)  # any extension goes there

    def known(part: str) -> bool:
        name = part.removeprefix("@")
        return (
            part in s.phones or name in s.people or name in s.groups or (domain and part.isdigit())
        )

    unknown = [part for part in targets.split(",") if not known(part)]
    return [(key, f"{part!r} is not a phone, person or group") for part in unknown]
