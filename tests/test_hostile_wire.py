"""Fuzzing what comes off NATS: jobs and probes at an edge, answers at the front.

Whatever bytes arrive, decoding either refuses them (``seal.Refused``) or
gives values inside the documented bounds; nothing else can come out.
"""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from deskbot.directory.snapshot import FORMATS
from deskbot.senders.base import Cause
from deskbot.senders.sites import seal, wire

KEY = b"k" * 64
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
JOB_FIELDS = {
    "id": st.just("ab" * 16) | st.text(max_size=40),
    "site": st.sampled_from(["berlin", "lyon", ""]),
    "uri": st.just("sip:486@10.0.0.86") | st.text(max_size=80),
    "text": st.text(max_size=60),
    "deadline": st.floats(allow_nan=True) | st.integers() | st.booleans() | JSON,
    "reply": st.just("deskbot.reply.berlin." + "f" * 12) | st.text(max_size=40),
    "format": st.sampled_from(sorted(FORMATS)) | JSON,
}
ANSWER_FIELDS = {
    "id": st.just("ab" * 16) | st.text(max_size=40),
    "site": st.sampled_from(["berlin", "lyon"]),
    "code": st.integers() | st.booleans() | st.floats() | JSON,
    "reason": st.text() | JSON,
    "cause": st.sampled_from([c.value for c in Cause]) | JSON,
}


def records(fields: dict) -> st.SearchStrategy[dict]:
    """Objects with any subset of the fields, each a right or a wrong value, and extras."""
    return st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda known: st.dictionaries(st.text(max_size=8), JSON, max_size=3).map(
            lambda extra: {**extra, **known}
        )
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_as_a_job_or_an_answer_are_refused(data: bytes) -> None:
    for decode in (
        lambda: wire.Job.decode(data, KEY, "berlin", time.time()),
        lambda: wire.decode_answer(data, KEY, "berlin"),
        lambda: wire.decode_probe(data, KEY, "berlin", time.time()),
    ):
        try:
            decode()
        except seal.Refused:
            continue
        raise AssertionError("unsigned bytes were taken")


@settings(max_examples=500, deadline=None)
@given(records(JOB_FIELDS), st.sampled_from([KEY, b"other" * 8]))
def test_a_job_is_taken_only_signed_by_the_site_and_inside_its_bounds(record, key) -> None:
    now = time.time()
    data = seal.seal(seal.JOB, key, "berlin", record)
    try:
        job = wire.Job.decode(data, KEY, "berlin", now)
    except seal.Refused:
        return
    assert key == KEY and job.site == "berlin" and job.format in FORMATS
    assert wire.JOB_ID.fullmatch(job.id) and job.reply == "deskbot.reply.berlin." + "f" * 12
    assert job.deadline <= now + wire.MAX_AHEAD and len(job.text) <= wire.MAX_TEXT_CHARS
    assert isinstance(job.uri, str) and len(job.uri) <= wire.MAX_URI_CHARS


@settings(max_examples=500, deadline=None)
@given(records(ANSWER_FIELDS), st.sampled_from([KEY, b"other" * 8]))
def test_an_answer_is_taken_only_signed_by_its_site_and_is_one_bounded_line(record, key) -> None:
    data = seal.seal(seal.ANSWER, key, record.get("site", "berlin"), record)
    try:
        job_id, code, reason, cause = wire.decode_answer(data, KEY, "berlin")
    except seal.Refused:
        return
    assert key == KEY and record["site"] == "berlin" and wire.JOB_ID.fullmatch(job_id)
    assert type(code) is int and (code == 0 or 100 <= code <= 699)
    assert len(reason) <= wire.MAX_REASON_CHARS and reason.isprintable()
    assert isinstance(cause, Cause)
    json.dumps([code, reason])  # fits an audit row and a JSON line


PROBE_FIELDS = {
    **{k: JOB_FIELDS[k] for k in ("id", "site", "uri")},
    # some inside their bounds (a few seconds ahead), most not
    "deadline": st.floats(-5, 200).map(lambda ahead: time.time() + ahead) | JOB_FIELDS["deadline"],
}


@settings(max_examples=500, deadline=None)
@given(
    records(PROBE_FIELDS),
    st.sampled_from([KEY, b"other" * 8]),
    st.sampled_from([seal.PROBE, seal.JOB]),
)
def test_a_probe_is_taken_only_signed_as_a_probe_of_the_site_and_before_its_deadline(
    record, key, kind
) -> None:
    now = time.time()
    data = seal.seal(kind, key, "berlin", record)
    try:
        probe_id, uri = wire.decode_probe(data, KEY, "berlin", now)
    except seal.Refused:
        return
    assert key == KEY and kind == seal.PROBE and record["site"] == "berlin"
    assert wire.JOB_ID.fullmatch(probe_id) and now <= record["deadline"] <= now + wire.MAX_AHEAD
    assert isinstance(uri, str) and len(uri) <= wire.MAX_URI_CHARS
