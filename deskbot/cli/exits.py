"""Exit codes of ``deskbot send`` and ``deskbot probe``, and how a report maps onto them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from deskbot.relay.report import Report
    from deskbot.senders.base import Outcome

EXIT_OK, EXIT_REFUSED, EXIT_NOTHING_SENT, EXIT_NO_ANSWER = 0, 1, 2, 3


def exit_code(result: Report) -> int:
    """0 every phone 2xx; 3 some phone gave no answer; else 1 (3 wins over 1)."""
    from deskbot.relay.report import outcomes

    return code_of(outcomes(result))


def code_of(outcomes: Iterable[Outcome]) -> int:
    """The exit code for the phones' outcomes (a phone not sent to is refused)."""
    from deskbot.senders.base import Outcome

    outcomes = set(outcomes)
    if outcomes & {Outcome.NO_ANSWER, Outcome.UNCONFIRMED}:
        return EXIT_NO_ANSWER
    if outcomes - {Outcome.DELIVERED}:
        return EXIT_REFUSED
    return EXIT_OK
