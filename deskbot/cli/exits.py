"""Exit codes of ``deskbot send`` and ``deskbot probe``, and how a report maps onto them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deskbot.relay.report import Report

EXIT_OK, EXIT_REFUSED, EXIT_NOTHING_SENT, EXIT_NO_ANSWER = 0, 1, 2, 3


def exit_code(result: Report) -> int:
    """0 every phone 2xx; 3 some phone gave no answer; else 1 (3 wins over 1)."""
    from deskbot.senders.base import Outcome

    outcomes = {ln.delivery.outcome if ln.delivery else Outcome.REFUSED for ln in result.lines}
    if outcomes & {Outcome.NO_ANSWER, Outcome.UNCONFIRMED}:
        return EXIT_NO_ANSWER
    if outcomes - {Outcome.DELIVERED}:
        return EXIT_REFUSED
    return EXIT_OK
