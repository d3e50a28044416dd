"""Alert webhooks -> what a desk phone shows, and the key that keeps repeats out (pure).

Prometheus Alertmanager (webhook version 4) and Grafana's webhook contact
point (version 1) share the group shape: ``status``, ``receiver``,
``groupKey``, ``truncatedAlerts`` and ``alerts[]``, each with ``status``,
``labels``, ``annotations``, ``startsAt`` and ``fingerprint``. Fields either
adds beyond these (Grafana's ``title``, ``values``, ...) are ignored.

A phone shows FIRING or RESOLVED, the alert name and its ``summary`` (else
``description``); several alerts in one notification are listed until
``max_chars`` is reached and end with "+N more". Alerts cannot be shortened
by their sender, so a text too long is cut at a word with an ellipsis, never
refused.
"""

from __future__ import annotations

import hashlib
import json
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["Alert", "Notification", "ValidationError", "key", "labels", "problem", "text"]

Status = Literal["firing", "resolved"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Alert(_Payload):
    status: Status
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    startsAt: str = ""
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return _one_line(self.labels.get("alertname", "")) or "alert"

    @property
    def summary(self) -> str:
        notes = self.annotations
        return _one_line(notes.get("summary") or notes.get("description") or "")

    @property
    def identity(self) -> str:
        """What tells this alert from others of its group: its fingerprint, else its labels."""
        return self.fingerprint or json.dumps(sorted(self.labels.items()))


class Notification(_Payload):
    status: Status
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0)
    alerts: list[Alert] = Field(min_length=1)


MAX_ALERTS = 1000  # alerts of one notification looked at; the rest count as "+N more"


def bounded(payload: object) -> object:
    """A notification cut to its first MAX_ALERTS alerts, the others added to
    ``truncatedAlerts`` (as Alertmanager's own ``max_alerts`` does): 50,000 alerts in
    one body cost no more than a thousand."""
    if not isinstance(payload, dict):
        return payload
    alerts, untold = payload.get("alerts"), payload.get("truncatedAlerts", 0)
    if not isinstance(alerts, list) or len(alerts) <= MAX_ALERTS:
        return payload
    if isinstance(untold, bool) or not isinstance(untold, int):
        return payload  # validation says what is wrong with it
    rest = len(alerts) - MAX_ALERTS
    return {**payload, "alerts": alerts[:MAX_ALERTS], "truncatedAlerts": untold + rest}


def problem(exc: ValidationError) -> str:
    """The first thing wrong with a payload, as a person reads it: 'alerts[0].status: ...'."""
    error = exc.errors()[0]
    where = ""
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return f"{where or 'payload'}: {error['msg']}"


def key(kind: str, client: str, targets: str, n: Notification) -> str:
    """The same for a notification delivered again (a retry, the other of an HA pair).

    Alertmanager gives no id per notification: this hashes the receiver, group,
    status and each alert's identity, status and start, plus where it goes. An
    alert that fires again later starts at a new time, so it is a new key.
    """
    alerts = sorted([a.identity, a.status, a.startsAt] for a in n.alerts)
    parts = [kind, client, targets, n.receiver, n.groupKey, n.status, alerts]
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=True).encode()).hexdigest()
    return f"{kind}:{digest[:40]}"


MAX_LABELS = 64  # labels a silence matches at most; more, or longer ones, make no silence
MAX_LABEL_CHARS = 1024


def labels(n: Notification) -> tuple[tuple[str, str], ...]:
    """What a confirmation of the notification silences: the labels its firing alerts share
    (one alert: all of its labels). None firing, none shared, or too many: ()."""
    firing = [a.labels for a in n.alerts if a.status == "firing"]
    if not firing:
        return ()
    shared = set(firing[0].items()).intersection(*(f.items() for f in firing[1:]))
    if len(shared) > MAX_LABELS or any(len(k) + len(v) > MAX_LABEL_CHARS for k, v in shared):
        return ()
    return tuple(sorted(shared))


def text(n: Notification, max_chars: int, template: str | None = None) -> str:
    """The phone's text for one notification, at most ``max_chars`` characters."""
    firing = [a for a in n.alerts if a.status == "firing"]
    resolved = [a for a in n.alerts if a.status == "resolved"]
    total = len(n.alerts) + n.truncatedAlerts
    names = {a.name for a in n.alerts}
    common = names.pop() if len(names) == 1 else ""
    mixed = bool(firing and resolved)
    if template is not None:
        items = [_fill(template, a) for a in (*firing, *resolved)]
        head = ""
    elif total == 1:
        [alert] = n.alerts
        items = [
            f"{_word(alert.status)}: {alert.name}" + (f": {s}" if (s := alert.summary) else "")
        ]
        head = ""
    else:
        if mixed:
            head = f"FIRING {len(firing)}, RESOLVED {len(resolved)}"
        else:
            head = f"{_word(n.alerts[0].status)} {total}"
        head += f"× {common}: " if common else ": "
        items = [_item(a, common, mixed) for a in (*firing, *resolved)]
    return _fit(head, items, n.truncatedAlerts, max_chars)


def _word(status: str) -> str:
    return "FIRING" if status == "firing" else "RESOLVED"


def _item(alert: Alert, common: str, mixed: bool) -> str:
    if common:
        item = alert.summary or _one_line(alert.labels.get("instance", "")) or alert.name
    else:
        item = f"{alert.name}: {alert.summary}" if alert.summary else alert.name
    return f"resolved {item}" if mixed and alert.status == "resolved" else item


class _Fields(dict[str, str]):
    """A template's fields: any label or annotation, plus status, alertname, summary."""

    def __missing__(self, name: str) -> str:
        return ""


def _fill(template: str, alert: Alert) -> str:
    fields = _Fields({**alert.labels, **alert.annotations})
    fields.update(status=_word(alert.status), alertname=alert.name, summary=alert.summary)
    return _one_line(string.Formatter().vformat(template, (), fields))


def _fit(head: str, items: list[str], untold: int, most: int) -> str:
    """head + items joined by '; ', as many as fit, then '+N more'; else cut with '…'.

    Linear: lengths are added up once, and no text longer than ``most`` is built."""
    shown, length = 0, len(head)
    for item in items:  # the longest run of items that fits without a "+N more"
        grown = length + len(item) + (2 if shown else 0)
        if grown > most:
            break
        shown, length = shown + 1, grown
    if shown == len(items) and untold == 0:
        return head + "; ".join(items)
    while shown > 0:  # make room for "; +N more"
        more = len(items) - shown + untold
        if length + len(f"; +{more} more") <= most:
            return head + "; ".join(items[:shown]) + f"; +{more} more"
        shown -= 1
        length -= len(items[shown]) + (2 if shown else 0)
    start, size = [head], len(head)
    for item in items:  # what the cut keeps: a little more than ``most``
        if size > most:
            break
        start.append(item if len(start) == 1 else "; " + item)
        size += len(start[-1])
    return _cut("".join(start)[: most + 1], most)


def _cut(text: str, most: int) -> str:
    """Cut at a word boundary when one is near the end, and end with an ellipsis."""
    if len(text) <= most:
        return text
    room = text[: most - 1]
    space = room.rfind(" ")
    if space >= most * 2 // 3:
        room = room[:space]
    return room.rstrip(" ;:,.-") + "…"


def _one_line(value: str) -> str:
    return " ".join(value.split())
