"""A command's report rebuilt from the audit log, for a command that came in again."""

from __future__ import annotations

from deskbot.directory.snapshot import Phone
from deskbot.relay import report
from deskbot.senders.base import Cause, Delivery
from deskbot.store.base import Seen

RESTARTED = "Not confirmed: deskbot restarted during the send"


def replayed(seen: Seen) -> report.Report:
    """A command's report from the log: phones without an answer were cut off by a restart."""
    answers = {a.extension: a for a in seen.answers}
    lines = []
    for planned in seen.plan:
        phone = Phone(planned.extension, planned.uri, planned.label)
        if planned.skipped:
            lines.append(report.Line(phone, None, planned.skipped))
            continue
        a = answers.get(planned.extension)
        if a is None:
            delivery = Delivery(planned.uri, 0, RESTARTED, 0.0, Cause.UNCONFIRMED)
        else:
            delivery = Delivery(a.uri, a.code, a.reason, a.elapsed_ms, _cause(a.cause))
        lines.append(report.Line(phone, delivery))
    return report.Report(summary_wanted=len(lines) > 1, lines=lines)


def _cause(value: str) -> Cause:
    try:
        return Cause(value)
    except ValueError:
        return Cause.ANSWERED
