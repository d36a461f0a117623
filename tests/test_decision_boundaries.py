"""The clamp into [base, maxReplicas] at its edges: table rows one either side of each bound,
and a property whose demand is a whole number of pods, so ``needed`` lands on the bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictive_scaler.decision import (
    DESIRED_WITHIN_RANGE,
    TOO_FEW_REPLICAS,
    TOO_MANY_REPLICAS,
    DecisionHistory,
    DecisionPolicy,
    HpaLimits,
    SignalForecast,
    decide_min_replicas,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
# A wide brake and no delay, so only the clamp shapes the answer.
OPEN = DecisionPolicy(
    scale_up_step=100,
    scale_down_delay_seconds=0,
    scale_down_step=100,
    missing_data_hold_seconds=1800,
)
SETTLED = DecisionHistory(tracking_since=NOW - timedelta(hours=1))
PER_POD = 0.5


def pods(n: int) -> list[SignalForecast]:
    """A forecast of exactly ``n`` pods' worth of demand."""
    return [SignalForecast("kv_cache", n * PER_POD, PER_POD)]


BOUNDARIES = [
    # (id, needed, (min, max, base), expected min, expected reason)
    ("one below the base is raised to it", 3, (4, 10, 4), 4, TOO_FEW_REPLICAS),
    ("at the base is within range", 4, (4, 10, 4), 4, DESIRED_WITHIN_RANGE),
    ("one above the base is taken", 5, (4, 10, 4), 5, DESIRED_WITHIN_RANGE),
    ("at the base from above is lowered to it", 4, (7, 10, 4), 4, DESIRED_WITHIN_RANGE),
    ("one below the base from above stops at it", 3, (7, 10, 4), 4, TOO_FEW_REPLICAS),
    ("one below max is taken", 9, (4, 10, 1), 9, DESIRED_WITHIN_RANGE),
    ("at max is within range", 10, (4, 10, 1), 10, DESIRED_WITHIN_RANGE),
    ("one above max is capped", 11, (4, 10, 1), 10, TOO_MANY_REPLICAS),
    ("a base above max yields to max", 3, (2, 5, 6), 5, TOO_FEW_REPLICAS),
    ("a base of zero allows zero", 0, (2, 5, 0), 0, DESIRED_WITHIN_RANGE),
]


@pytest.mark.parametrize(
    ("needed", "limits", "expected", "reason"),
    [case[1:] for case in BOUNDARIES],
    ids=[case[0] for case in BOUNDARIES],
)
def test_clamp_boundaries(
    needed: int, limits: tuple[int, int, int], expected: int, reason: str
) -> None:
    decision = decide_min_replicas(pods(needed), HpaLimits(*limits), OPEN, SETTLED, NOW)
    assert decision.needed == needed
    assert (decision.min_replicas, decision.reason) == (expected, reason)


@settings(max_examples=300, deadline=None)
@given(
    needed=st.integers(0, 30),
    base=st.integers(0, 30),
    max_replicas=st.integers(1, 30),
    current=st.integers(0, 30),
)
def test_settled_full_data_lands_on_the_clamped_need(
    needed: int, base: int, max_replicas: int, current: int
) -> None:
    hpa = HpaLimits(current, max_replicas, base)
    decision = decide_min_replicas(pods(needed), hpa, OPEN, SETTLED, NOW)
    # With no brake and no delay, the answer is exactly the need clamped into the range.
    floor = min(base, max_replicas)
    assert decision.min_replicas == min(max(needed, floor), max_replicas)
