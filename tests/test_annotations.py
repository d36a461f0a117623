"""The annotation rules, table-driven with an explicit ``now`` (pure code)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from predictive_scaler.annotations import (
    ANNOTATION_APPLIED_MIN_REPLICAS,
    ANNOTATION_BASE_MIN_REPLICAS,
    ANNOTATION_LAST_FORECAST,
    ANNOTATION_MODEL,
    ANNOTATION_REASON,
    ANNOTATION_UPDATED_AT,
    INFO_REFRESH_SECONDS,
    compute_info_codes,
    decide_info_refresh,
    state_changed,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
STORED = {
    ANNOTATION_BASE_MIN_REPLICAS: "2",
    ANNOTATION_APPLIED_MIN_REPLICAS: "3",
    ANNOTATION_REASON: "DesiredWithinRange: kv_cache needs 3 replicas",
    ANNOTATION_MODEL: "persistence",
    ANNOTATION_LAST_FORECAST: '{"upper":1.9}',
    ANNOTATION_UPDATED_AT: "2026-03-02T11:00:00Z",
}


def new(**changes: str | None) -> dict[str, str | None]:
    names = {
        "base": ANNOTATION_BASE_MIN_REPLICAS,
        "applied": ANNOTATION_APPLIED_MIN_REPLICAS,
        "reason": ANNOTATION_REASON,
        "model": ANNOTATION_MODEL,
        "forecast": ANNOTATION_LAST_FORECAST,
        "updated": ANNOTATION_UPDATED_AT,
    }
    out: dict[str, str | None] = dict(STORED)
    out.update({names[k]: v for k, v in changes.items()})
    return out


@pytest.mark.parametrize(
    ("case", "annotations", "changed"),
    [
        ("identical", new(), False),
        ("the base", new(base="1"), True),
        ("the applied minReplicas", new(applied="4"), True),
        ("the forecast and the time only", new(forecast='{"upper":2.1}', updated="x"), False),
        ("the reason's code", new(reason="TooFewReplicas: raised to the base"), False),
        ("the model", new(model="holt_winters"), False),
    ],
)
def test_only_state_annotations_are_state(
    case: str, annotations: dict[str, str | None], changed: bool
) -> None:
    assert state_changed(STORED, annotations) is changed, case


def test_first_contact_is_a_state_change() -> None:
    assert state_changed({}, new())


@pytest.mark.parametrize(
    ("annotations", "codes"),
    [
        ({}, (None, None)),
        ({ANNOTATION_REASON: "FailedGetMetric: holding 3: no data"}, ("FailedGetMetric", None)),
        ({ANNOTATION_REASON: "BaseRestored", ANNOTATION_MODEL: "auto"}, ("BaseRestored", "auto")),
    ],
)
def test_info_codes_are_the_reason_code_and_the_model(
    annotations: dict[str, str | None], codes: tuple[str | None, str | None]
) -> None:
    assert compute_info_codes(annotations) == codes


def test_the_same_codes_with_new_numbers_never_refresh() -> None:
    message = new(reason="DesiredWithinRange: kv_cache needs 4 replicas", forecast="{}")
    assert decide_info_refresh(STORED, message, NOW - timedelta(days=1), NOW) == (False, None)


def test_a_lasting_change_is_written_after_the_refresh_interval() -> None:
    changed = new(reason="ScaleDownStabilized: holding 3")
    since = None
    for minutes in range(0, 60, 5):
        now = NOW + timedelta(minutes=minutes)
        due, since = decide_info_refresh(STORED, changed, since, now)
        assert since == NOW
        assert due is (minutes * 60 >= INFO_REFRESH_SECONDS), minutes


def test_a_flip_back_restarts_the_wait() -> None:
    changed = new(reason="TooFewReplicas: raised to the base")
    due, since = decide_info_refresh(STORED, changed, None, NOW)
    assert (due, since) == (False, NOW)
    # Back to the written code: nothing to refresh, and the run is over.
    assert decide_info_refresh(STORED, new(), since, NOW + timedelta(minutes=5)) == (False, None)
    later = NOW + timedelta(seconds=INFO_REFRESH_SECONDS)
    assert decide_info_refresh(STORED, changed, None, later) == (False, later)
