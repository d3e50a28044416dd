"""Deliveries -> words a person reads (pure): plain text, Slack mrkdwn, Matrix HTML."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from deskbot.delivery import Delivery, Outcome
from deskbot.directory import Phone

MARK = {
    Outcome.DELIVERED: "✅",
    Outcome.REFUSED: "❌",
    Outcome.NO_ANSWER: "⏱️",
    Outcome.UNCONFIRMED: "⚠️",
}


def hint(delivery: Delivery, extension: str = "") -> str:
    """What a person can do about a failed delivery; empty for a success."""
    code, outcome = delivery.code, delivery.outcome
    ext = extension or "this extension"
    if outcome is Outcome.DELIVERED:
        return ""
    if outcome is Outcome.UNCONFIRMED:
        return "the SIP agent restarted while sending: the text may or may not be on the screen"
    if code == 408:
        return (
            "no answer: the phone is off, unplugged or unreachable, or it ignores senders "
            "other than its registrar (Snom: turn 'Filter Packets from Registrar' off)"
        )
    if delivery.local and code == 413:
        return "the text is too long for one SIP message: shorten it"
    if delivery.local and delivery.reason.startswith("SIP agent is down"):
        return "deskbot's SIP agent is down: see deskbot's log and /healthz, then restart it"
    if delivery.local and "ETOOMANY" in delivery.reason:
        return (
            "deskbot has too many TCP connections open (pjsip handles about 60): "
            "send to fewer phones at once, or use UDP"
        )
    if delivery.local:
        return (
            "no connection to the phone (refused or network error): check it is on and its SIP port"
        )
    if code == 404:
        return (
            f"the phone has no identity {ext} (through a PBX: no phone registered as "
            f"{ext}): check the phone's account or the directory's uri"
        )
    if code in (401, 407):
        return "the PBX refused deskbot's credentials: check [sip.registrar] username and password"
    if code == 403:
        return "the phone or PBX refuses messages from deskbot: allow deskbot's address there"
    if code == 480:
        return "the phone is not available (not registered at the PBX, or switched off)"
    if code in (486, 600):
        return "the phone is busy or on do-not-disturb: try again later"
    if code == 603:
        return "the person at the phone declined: try again later or call"
    if code in (405, 415, 488, 501):
        return "this phone does not take text messages (SIP MESSAGE)"
    if code == 503:
        return "the phone or PBX is overloaded or unavailable: try again in a minute"
    if 300 <= code < 400:
        return "the phone redirected the message: put its new address in the directory"
    return "the phone refused the message: see its log or the PBX's"


@dataclass(frozen=True, slots=True)
class Line:
    phone: Phone
    delivery: Delivery | None  # None: not sent (the reason says why)
    skipped: str = ""


@dataclass(frozen=True)
class Report:
    """The outcome of one send command, ready to be worded."""

    summary_wanted: bool
    lines: list[Line] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return sum(
            1 for ln in self.lines if ln.delivery and ln.delivery.outcome is Outcome.DELIVERED
        )

    @property
    def ok(self) -> bool:
        return bool(self.lines) and self.delivered == len(self.lines)


def line_text(line: Line) -> str:
    phone = line.phone
    if line.delivery is None:
        return f"🚫 {phone.title}: not sent: {line.skipped}"
    d = line.delivery
    answer = "no answer" if d.code == 0 else f"{d.code} {d.reason}"
    text = f"{MARK[d.outcome]} {phone.title}: {answer}"
    tip = hint(d, phone.extension)
    return f"{text} ({d.elapsed_ms:.0f} ms)" if not tip else f"{text} — {tip}"


def summary_text(report: Report) -> str:
    return f"{report.delivered}/{len(report.lines)} delivered"


def plain(report: Report) -> str:
    lines = [line_text(ln) for ln in report.lines]
    if report.summary_wanted:
        lines.append(summary_text(report))
    return "\n".join(lines)


def to_html(text: str) -> str:
    """Plain text with `code` spans and line breaks -> Matrix HTML."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`\n]+)`", r"<code>\1</code>", escaped)
    return escaped.replace("\n", "<br>")


def mrkdwn_escape(text: str) -> str:
    """Slack mrkdwn needs only &, < and > escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
