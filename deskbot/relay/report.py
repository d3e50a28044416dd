"""What a person reads (pure): reports of deliveries, help, who and history; plain, mrkdwn, HTML."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from deskbot.directory.snapshot import HTTP_FORMATS, INFOBOX, Directory, Phone
from deskbot.relay import screenhints
from deskbot.senders.base import Cause, Delivery, Outcome
from deskbot.store.base import HistoryEntry

MARK = {
    Outcome.DELIVERED: "✅",
    Outcome.REFUSED: "❌",
    Outcome.NO_ANSWER: "⏱️",
    Outcome.UNCONFIRMED: "⚠️",
}


ACCEPTED_NOT_SHOWN = (
    "for Infobox phones, 200 means the phone accepted the notification, not that it "
    "is on the screen (a Snom phone with XML push off still answers 200)"
)


def hint(delivery: Delivery, phone: Phone | None = None, probe: bool = False) -> str:
    """What a person can do about a failed delivery (or probe); empty for a success."""
    code, outcome = delivery.code, delivery.outcome
    ext = phone.extension if phone else "this extension"
    if outcome is Outcome.DELIVERED:
        return ""
    if phone is not None and not probe and phone.format in HTTP_FORMATS:
        return screenhints.push_hint(delivery, phone)
    if phone is not None and not probe and delivery.cause is Cause.ANSWERED:
        found = screenhints.notify_hint(code, phone.format)
        if found:
            return found
    match delivery.cause:
        case Cause.UNCONFIRMED if probe:  # a site's edge that did not answer its probe
            return "nobody can say whether the phone answers: check that office's deskbot edge"
        case Cause.UNCONFIRMED:
            return (
                "deskbot or its SIP agent restarted while sending: the text may or may not "
                "be on the screen"
            )
        case Cause.SITE_DOWN:
            return (
                "nothing was sent: no edge of this phone's office is online; start "
                "`deskbot edge` there or check its link to NATS, then "
                + ("probe" if probe else "send")
                + " again"
            )
        case Cause.TOO_LONG:
            return "the text is too long for one SIP message: shorten it"
        case Cause.AGENT_DOWN:
            return "deskbot's SIP agent is down: see deskbot's log and /healthz, then restart it"
        case Cause.TOO_MANY:
            return (
                "deskbot has too many TCP connections open (pjsip handles about 60): "
                "send to fewer phones at once, or use UDP"
            )
        case Cause.TRANSPORT:
            return (
                "no connection to the phone (refused or network error): "
                "check it is on and its SIP port"
            )
    if code == 408 or delivery.cause is Cause.TIMEOUT:
        return (
            "no answer: the phone is off, unplugged or unreachable, or it ignores senders "
            "other than its registrar (Snom: turn 'Filter Packets from Registrar' off)"
        )
    infobox = not probe and phone is not None and phone.format == INFOBOX
    if code in (401, 407) and (probe or infobox):
        return (
            "the PBX (or phone) wants this request authenticated, and deskbot answers such "
            "challenges only for text messages (a pjsua limit): let the PBX take OPTIONS and "
            "NOTIFY from deskbot's address without one"
        )
    if infobox:
        found = _infobox_hint(code)
        if found:
            return found
    if probe and code in (405, 501):
        return "the phone does not answer SIP OPTIONS (it may still take messages)"
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


def _infobox_hint(code: int) -> str:
    """Hints for the answers a Snom Infobox NOTIFY gets; empty where the general one fits."""
    fallback = 'or set format = "message" for it'
    instead = fallback.removeprefix("or ")
    if code == 489:
        return (
            "the phone does not take Infobox notifications (Event: xml): firmware too old "
            f"or XML notify off; update it or turn XML notify on, {fallback}"
        )
    if code == 481:
        return (
            "the phone takes NOTIFY only inside a subscription, so it is no Snom phone with "
            f"Infobox: {instead}"
        )
    if code in (405, 501):
        return f"the phone does not take SIP NOTIFY: {instead}"
    if code == 415:
        return f"the phone does not take Snom XML (application/snomxml): {instead}"
    if code == 403:
        return "the phone refuses XML from deskbot: list deskbot's address in its mb_trusted_hosts"
    if code == 400:
        return f"the phone refused the notification as malformed: not a Snom phone? {instead}"
    return ""


@dataclass(frozen=True, slots=True)
class Line:
    phone: Phone
    delivery: Delivery | None  # None: not sent (the reason says why)
    skipped: str = ""
    probe: bool = False  # the answer to a probe (OPTIONS), not to a text
    confirm: str = ""  # "confirm asked", "cannot confirm (format message)"; "": not asked


@dataclass(frozen=True)
class Report:
    """The outcome of one send command, ready to be worded."""

    summary_wanted: bool
    lines: list[Line] = field(default_factory=list)
    probe: bool = False  # the answers to `probe TARGETS`
    seconds: float = 0.0  # from taking the command to its last phone's answer
    command_id: int = 0  # its id in the audit log (the API's GET /v1/commands/ID); 0: none

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
    tip = hint(d, phone, line.probe)
    text = f"{text} ({d.elapsed_ms:.0f} ms)" if not tip else f"{text} — {tip}"
    return f"{text}; {line.confirm}" if line.confirm else text


def delivery_record(line: Line) -> dict[str, object]:
    """One phone's answer for machines (`deskbot send --json`, the HTTP API)."""
    phone, d = line.phone, line.delivery
    return {
        "target": phone.extension,
        "label": phone.label,
        "uri": phone.uri,
        "code": d.code if d else 0,
        "reason": d.reason if d else line.skipped,
        "elapsed_ms": d.elapsed_ms if d else 0.0,
        "outcome": d.outcome.value if d else "skipped",
        "hint": hint(d, phone, line.probe) if d else line.skipped,
    }


def summary_text(report: Report) -> str:
    if report.probe:
        return f"{report.delivered}/{len(report.lines)} phones answer"
    return f"{report.delivered}/{len(report.lines)} delivered"


def plain(report: Report) -> str:
    lines = [line_text(ln) for ln in report.lines]
    if report.summary_wanted:
        lines.append(summary_text(report))
    return "\n".join(lines)


def to_html(text: str) -> str:
    """Plain text with `code` spans and line breaks -> Matrix HTML."""
    import html

    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`\n]+)`", r"<code>\1</code>", escaped)
    return escaped.replace("\n", "<br>")


def mrkdwn_escape(text: str) -> str:
    """Slack mrkdwn needs only &, < and > escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def answer_text(text: str, error: bool) -> str:
    """An answer as the chat shows it: refusals and mistakes start with a warning sign."""
    return ("⚠️ " if error else "") + text


def help_text(directory: Directory, max_chars: int, admin: bool = False) -> str:
    groups = ", ".join(f"@{g}" for g in sorted(directory.groups)) or "none"
    infobox = any(p.format == INFOBOX for p in directory.phones.values())
    extra = ["`probe TARGETS` asks phones whether they answer (SIP OPTIONS, nothing is shown)."]
    if infobox:
        extra.append(f"Each line of the text is a line on the screen; {ACCEPTED_NOT_SHOWN}.")
    return "\n".join(
        [
            "Send a text to desk phones: `TARGETS TEXT`, like `486 meeting moved` or "
            "`@sales lunch is here`.",
            "TARGETS: an extension (`486`), a person (`alice`), a group (`@sales`), a mention, "
            "or several joined by commas (`486,alice,@sales`).",
            f"Text: up to {max_chars} characters.",
            "Templates: `TARGETS !TEMPLATE key=value...` or `!TEMPLATE key=value...` (to the "
            "template's own targets); `templates` lists them.",
            "Later: `in 20s|15m|2h TARGETS TEXT` or `at 14:55 TARGETS TEXT`; `scheduled` lists "
            "your pending sends, `cancel ID` cancels one.",
            "`confirm TARGETS TEXT` asks each phone to confirm with a key; the confirmations "
            "come to this thread.",
            "`who TARGET` shows where a target goes; `history` lists your last sends "
            "(`history all` for admins).",
            f"Groups: {groups}. Phones in the directory: {len(directory.phones)}.",
            *(extra if admin else extra[1:]),
        ]
    )


def who_text(target: str, phones: Sequence[Phone], show_uris: bool, most: int = 50) -> str:
    lines = [f"{target} → {len(phones)} phone(s):"]
    for p in phones[:most]:
        where = f" at {p.uri}" if show_uris else ""
        lines.append(f"• {p.title}{where} ({screenhints.FORMAT_NAMES.get(p.format, p.format)})")
    if len(phones) > most:
        lines.append(f"… and {len(phones) - most} more")
    if any(p.format == INFOBOX for p in phones):
        lines.append(ACCEPTED_NOT_SHOWN[0].upper() + ACCEPTED_NOT_SHOWN[1:] + ".")
    return "\n".join(lines)


def history_text(entries: Sequence[HistoryEntry], everyone: bool) -> str:
    if not entries:
        return "no sends yet"
    lines = ["Last sends" + (" (everyone):" if everyone else ":")]
    for e in entries:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.ts))
        who = f"{e.who} " if everyone else ""
        lines.append(
            f"• {stamp} {who}→ {e.targets} ({e.text_chars} chars): "
            f"{e.delivered}/{e.phones} delivered" + (f" [{_short(e.answers)}]" if e.answers else "")
        )
    return "\n".join(lines)


def _short(answers: str, limit: int = 80) -> str:
    return answers if len(answers) <= limit else answers[: limit - 1] + "…"


_JSON = json.JSONEncoder(ensure_ascii=False)  # one for every --json line (json.dumps with
# an argument builds one per call)


def outcomes(result: Report) -> list[Outcome]:
    """Each phone's outcome; a phone not sent to counts as refused (the exit codes)."""
    return [ln.delivery.outcome if ln.delivery else Outcome.REFUSED for ln in result.lines]


def shell_lines(result: Report, as_json: bool) -> str:
    """What `deskbot send` prints on stdout: a line per phone (tab-separated, or JSON)."""
    return "".join(f"{shell_line(ln, as_json)}\n" for ln in result.lines)


def shell_line(line: Line, as_json: bool) -> str:
    phone, d = line.phone, line.delivery
    if as_json:
        return _JSON.encode(delivery_record(line))
    if d is None:
        fields = [phone.extension, phone.label or "-", "not sent", line.skipped]
    else:
        tip = hint(d, phone, line.probe)
        fields = [phone.extension, phone.label or "-", f"{d.code} {d.reason}"]
        fields += [f"{d.elapsed_ms:.0f} ms", *([tip] if tip else [])]
    return "\t".join(map(terminal, fields))


def terminal(field: str) -> str:
    """One field of a terminal line: a control character (ESC, CR, LF, TAB, bidi) cannot
    move the cursor, forge a line or split a field; it shows escaped."""
    if field.isprintable():
        return field
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in field)
