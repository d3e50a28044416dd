"""The one path from a source through the relay: ``serve``, ``carry_out`` and ``take``.

A source only translates: its platform's event becomes a ``Request``, and
``serve`` runs that request through the relay and answers it through the
source's ``Replier`` (an answer, a "waiting" signal, a report). A source
that answers once a send is recorded, before the phones answer (alert
webhooks), uses ``take`` instead and sends with ``relay.fan_out``. A source
does no directory lookup, no SIP and no policy; what it must know of the
policy it asks the relay (``admin_ids``, ``allows``, ``patience``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from deskbot import failpoints
from deskbot.relay.relay import Relay
from deskbot.relay.report import Report
from deskbot.relay.values import (
    Accepted,
    Answer,
    Dispatch,
    Elsewhere,
    NotRecorded,
    Replay,
    Request,
)

if TYPE_CHECKING:
    from deskbot.sources.base import Replier


async def serve(relay: Relay, request: Request, replier: Replier) -> Answer | Report | None:
    """Run one command through the relay and answer it: the one path for every source.

    Answered exactly once: a command that comes in again (same key) is not sent
    again, and is answered only if its answer never reached the chat. None: it
    was answered before.
    """
    prepared = relay.prepare(request)
    if isinstance(prepared, Replay):
        if prepared.report is None:
            return None
        await _post(relay, request, replier, prepared.report)
        relay.answered(request)
        return prepared.report
    if isinstance(prepared, Answer):
        # claimed first, so that of two replicas one answers (`who`, `help`, a refusal); a
        # client that retries a refusal (answer_repeats) is checked and answered afresh
        if not request.answer_repeats and not relay.answering(request):
            return None
        try:
            await replier.answer(prepared)
        except BaseException:
            relay.not_answered(request)
            raise
        relay.release(request)
        return prepared
    return await carry_out(relay, prepared, replier)


async def carry_out(relay: Relay, job: Dispatch, replier: Replier) -> Report | Answer | None:
    """Send a prepared job; the replier's waiting signal never holds up the phones.

    The command is recorded before the first await, so a repeat of it that arrives
    while its phones are asked finds its key and is not sent again. None: another
    replica recorded it first, and answers it.
    """
    try:
        accepted = relay.accept(job)
    except NotRecorded as refused:
        await replier.answer(refused.answer)
        return refused.answer
    except Elsewhere:
        return None
    try:
        return await _carry_out(relay, accepted, replier)
    finally:
        relay.release(job.request)  # answered, or failed: the hold is left to expire


async def _carry_out(relay: Relay, accepted: Accepted, replier: Replier) -> Report:
    job = accepted.job
    delivery = asyncio.ensure_future(relay.fan_out(accepted))
    try:
        after = replier.waiting_after
        if after is not None:
            if after > 0:
                await asyncio.wait({delivery}, timeout=after)
            if not delivery.done():
                await replier.waiting(job)
        result = await delivery
    except asyncio.CancelledError:
        delivery.cancel()
        raise
    except BaseException:
        await asyncio.gather(delivery, return_exceptions=True)  # the phones still get the text
        raise
    if not relay.still_ours(accepted):  # the reply is this replica's from here on
        return result
    await _post(relay, job.request, replier, result)
    failpoints.reached("after-reply")
    relay.answered(job.request)
    failpoints.reached("after-answered")
    return result


async def _post(relay: Relay, request: Request, replier: Replier, result: Report) -> None:
    """Post a claimed reply; if it cannot be posted, the claim is given back."""
    try:
        await replier.report(result)
    except BaseException:
        relay.not_replied(request)
        raise


def take(relay: Relay, request: Request) -> Answer | Replay | Accepted:
    """Check and durably record a send without waiting for the phones.

    Synchronous on purpose: nothing else runs between the key check and the
    record, so two copies of a notification arriving together cannot both pass.
    An ``Accepted`` still has to be sent: ``await relay.fan_out(accepted)``.
    """
    prepared = relay.prepare(request)
    if not isinstance(prepared, Dispatch):
        return prepared
    try:
        accepted = relay.accept(prepared)
    except NotRecorded as refused:
        return refused.answer
    except Elsewhere:
        return Replay(None)
    return accepted
