"""Alert notifications -> the phone's text and the de-duplication key (pure)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deskbot.sources.alerts import Notification, key, text


def alert(name: str, summary: str = "", status: str = "firing", **labels: str) -> dict:
    return {
        "status": status,
        "labels": {"alertname": name, **labels},
        "annotations": {"summary": summary} if summary else {},
        "startsAt": "2026-11-26T08:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"{abs(hash((name, tuple(labels.items())))):016x}",
    }


def notification(*alerts: dict, status: str = "firing", **extra) -> Notification:
    return Notification.model_validate(
        {
            "version": "4",
            "status": status,
            "receiver": "desks",
            "groupKey": '{}:{alertname="x"}',
            "alerts": list(alerts),
            **extra,
        }
    )


def test_one_alert_shows_status_name_and_summary():
    n = notification(alert("FreezerWarm", "Freezer 2 at -12 °C"))
    assert text(n, 160) == "FIRING: FreezerWarm: Freezer 2 at -12 °C"


def test_description_stands_in_for_a_missing_summary_and_a_resolved_alert_says_so():
    a = alert("DoorOpen", status="resolved")
    a["annotations"] = {"description": "Back door\nopen for 10 min"}
    assert text(notification(a, status="resolved"), 160) == (
        "RESOLVED: DoorOpen: Back door open for 10 min"
    )


def test_several_alerts_of_one_name_are_listed_once_with_the_name_in_front():
    n = notification(
        alert("DiskFull", "db1 at 95%", instance="db1"),
        alert("DiskFull", "db2 at 97%", instance="db2"),
    )
    assert text(n, 160) == "FIRING 2× DiskFull: db1 at 95%; db2 at 97%"


def test_mixed_notifications_count_both_and_mark_the_resolved_ones():
    n = notification(
        alert("BuildBroken", "main red"),
        alert("LabDown", "lab switch unreachable", status="resolved"),
    )
    assert text(n, 160) == (
        "FIRING 1, RESOLVED 1: BuildBroken: main red; resolved LabDown: lab switch unreachable"
    )


def test_what_does_not_fit_is_counted_as_more_and_truncated_alerts_too():
    many = [alert("DiskFull", f"host{i:02d} disk nearly full", host=str(i)) for i in range(12)]
    result = text(notification(*many, truncatedAlerts=3), 80)
    assert len(result) <= 80
    assert result.startswith("FIRING 15× DiskFull: host00 disk nearly full; ")
    assert result.endswith("; +13 more")


def test_one_long_summary_is_cut_at_a_word_with_an_ellipsis():
    n = notification(alert("Disk", "the disk of the build server is " + "very " * 40 + "full"))
    result = text(n, 60)
    assert len(result) <= 60 and result.endswith("very…")
    assert result.startswith("FIRING: Disk: the disk of the build server is very")


def test_a_template_overrides_the_wording_per_alert():
    n = notification(alert("DoorOpen", "back door", site="hq"))
    assert text(n, 160, "{status} at {site}: {summary} ({missing})") == (
        "FIRING at hq: back door ()"
    )


def test_a_delivery_again_has_the_same_key_and_a_new_firing_or_a_resolution_does_not():
    firing = notification(alert("FreezerWarm", "warm"))
    again = Notification.model_validate(copy.deepcopy(firing.model_dump()))
    assert key("alertmanager", "mon", "486", firing) == key("alertmanager", "mon", "486", again)
    resolved = notification(alert("FreezerWarm", "warm", status="resolved"), status="resolved")
    refired = alert("FreezerWarm", "warm")
    refired["startsAt"] = "2026-11-26T12:00:00Z"
    keys = {
        key("alertmanager", "mon", "486", firing),
        key("alertmanager", "mon", "486", resolved),
        key("alertmanager", "mon", "486", notification(refired)),
        key("alertmanager", "mon", "487", firing),  # another webhook to other phones
        key("grafana", "mon", "486", firing),
    }
    assert len(keys) == 5


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "firing", "alerts": []},
        {"status": "burning", "alerts": [alert("x")]},
        {"status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": 5}}]},
        {"status": "firing", "alerts": "x"},
    ],
)
def test_payloads_that_are_not_notifications_are_rejected(payload):
    with pytest.raises(ValueError):
        Notification.model_validate(payload)


words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@given(
    st.lists(st.tuples(words, words, st.sampled_from(["firing", "resolved"])), min_size=1),
    st.integers(0, 50),
    st.integers(1, 1000),
)
def test_the_text_never_exceeds_max_chars(alerts, truncated, most):
    n = notification(
        *(
            alert(name, summary, status, n=str(i))
            for i, (name, summary, status) in enumerate(alerts)
        ),
        truncatedAlerts=truncated,
    )
    assert 0 < len(text(n, most)) <= most
