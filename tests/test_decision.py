"""The decision core: table-driven cases with an explicit ``now``, and properties that pin
every invariant of DESIGN.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictive_scaler.decision import (
    DecisionHistory,
    DecisionPolicy,
    HpaLimits,
    SignalForecast,
    compute_history_floor,
    compute_replicas_for,
    decide_min_replicas,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POLICY = DecisionPolicy(
    scale_up_step=4,
    scale_down_delay_seconds=900,
    scale_down_step=1,
    missing_data_hold_seconds=1800,
)
SETTLED = DecisionHistory(tracking_since=NOW - timedelta(hours=1))


def kv(upper: float | None, problem: str | None = None) -> SignalForecast:
    return SignalForecast("kv_cache", upper, 0.7, problem)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


CASES = [
    # (id, signals, (min, max, base), history, expected min, expected reason)
    ("raise within the step", [kv(3.4)], (2, 20, 1), SETTLED, 5, "DesiredWithinRange"),
    ("raise capped by the step", [kv(7.0)], (1, 20, 1), SETTLED, 5, "ScaleUpLimit"),
    ("capped at maxReplicas", [kv(100.0)], (18, 20, 1), SETTLED, 20, "TooManyReplicas"),
    ("never below the base", [kv(0.0)], (3, 20, 3), SETTLED, 3, "TooFewReplicas"),
    ("equal holds", [kv(2.8)], (4, 20, 1), SETTLED, 4, "DesiredWithinRange"),
    (
        "lower waits for the delay after good data starts",
        [kv(0.7)],
        (10, 20, 1),
        DecisionHistory(tracking_since=ago(5)),
        10,
        "ScaleDownStabilized",
    ),
    ("lower by one step after the delay", [kv(0.7)], (10, 20, 1), SETTLED, 9, "ScaleDownLimit"),
    (
        "lower only to the highest recent need",
        [kv(0.7)],
        (10, 20, 1),
        DecisionHistory(recommendations=((ago(5), 8),), tracking_since=ago(60)),
        9,
        "ScaleDownLimit",
    ),
    (
        "a recent need at the current value holds",
        [kv(0.7)],
        (10, 20, 1),
        DecisionHistory(recommendations=((ago(5), 10),), tracking_since=ago(60)),
        10,
        "ScaleDownStabilized",
    ),
    (
        "recommendations older than the delay are forgotten",
        [kv(0.7)],
        (10, 20, 1),
        DecisionHistory(recommendations=((ago(20), 10),), tracking_since=ago(60)),
        9,
        "ScaleDownLimit",
    ),
    ("no data: hold", [kv(None, "empty result")], (8, 20, 1), SETTLED, 8, "FailedGetMetric"),
    (
        "no data past the hold: decay towards the base",
        [kv(None, "empty result")],
        (8, 20, 1),
        DecisionHistory(bad_since=ago(31)),
        7,
        "MissingDataDecay",
    ),
    (
        "no data at the base: stay",
        [kv(None, "stale")],
        (2, 20, 2),
        DecisionHistory(bad_since=ago(300)),
        2,
        "FailedGetMetric",
    ),
    (
        "partial data never lowers",
        [kv(0.7), SignalForecast("tokens", None, 100.0, "prometheus unreachable")],
        (10, 20, 1),
        SETTLED,
        10,
        "PartialMetrics",
    ),
    (
        "partial data may raise",
        [kv(7.0), SignalForecast("tokens", None, 100.0, "prometheus unreachable")],
        (8, 20, 1),
        SETTLED,
        10,
        "DesiredWithinRange",
    ),
    (
        "a signal on partial data never lowers",
        [SignalForecast("kv_cache", 0.7, 0.7, partial="2 of 4 pods reporting")],
        (10, 20, 1),
        SETTLED,
        10,
        "PartialMetrics",
    ),
    (
        "a signal on partial data may raise",
        [SignalForecast("kv_cache", 7.0, 0.7, partial="queue query failed")],
        (8, 20, 1),
        SETTLED,
        10,
        "DesiredWithinRange",
    ),
    (
        "the largest need across signals wins",
        [kv(1.4), SignalForecast("tokens", 900.0, 100.0)],
        (2, 20, 1),
        SETTLED,
        6,
        "ScaleUpLimit",
    ),
    (
        "maxReplicas lowered by a user below our min: obey max at once",
        [kv(7.0)],
        (12, 8, 1),
        SETTLED,
        8,
        "TooManyReplicas",
    ),
]


@pytest.mark.parametrize(
    ("signals", "limits", "history", "expected", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision_table(
    signals: list[SignalForecast],
    limits: tuple[int, int, int],
    history: DecisionHistory,
    expected: int,
    reason: str,
) -> None:
    decision = decide_min_replicas(signals, HpaLimits(*limits), POLICY, history, NOW)
    assert decision.min_replicas == expected
    assert decision.reason == reason
    assert decision.message


def test_replicas_use_the_hpa_formula() -> None:
    assert compute_replicas_for(2.1, 0.7) == 3
    assert compute_replicas_for(2.1000001, 0.7) == 4
    assert compute_replicas_for(0.0, 0.7) == 0
    with pytest.raises(ValueError, match="target per pod"):
        compute_replicas_for(1.0, 0.0)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_min_replicas([kv(1.0)], HpaLimits(1, 5, 1), POLICY, SETTLED, datetime(2026, 1, 1))


BRAKE = [
    # (id, needed upper, (min, max, base, current replicas), expected min, expected reason)
    ("running above min: the step counts from what runs", 14.0, (2, 20, 2, 10), 14, "ScaleUpLimit"),
    ("need within what runs plus the step", 7.7, (2, 20, 2, 10), 11, "DesiredWithinRange"),
    ("need below what runs: min follows the need", 4.2, (2, 20, 2, 10), 6, "DesiredWithinRange"),
    ("running below min: the step counts from min", 14.0, (6, 20, 2, 3), 10, "ScaleUpLimit"),
    ("no replicas reported: from min", 14.0, (2, 20, 2, 0), 6, "ScaleUpLimit"),
    ("running above max: the step stops at max", 70.0, (2, 20, 2, 25), 20, "TooManyReplicas"),
]


@pytest.mark.parametrize(
    ("upper", "limits", "expected", "reason"),
    [case[1:] for case in BRAKE],
    ids=[case[0] for case in BRAKE],
)
def test_scale_up_brake_counts_from_the_running_replicas(
    upper: float, limits: tuple[int, int, int, int], expected: int, reason: str
) -> None:
    min_replicas, max_replicas, base, replicas = limits
    hpa = HpaLimits(min_replicas, max_replicas, base, current_replicas=replicas)
    decision = decide_min_replicas([kv(upper)], hpa, POLICY, SETTLED, NOW)
    assert decision.min_replicas == expected
    assert decision.reason == reason


def test_history_is_returned_not_mutated() -> None:
    history = DecisionHistory(tracking_since=ago(60))
    decision = decide_min_replicas([kv(0.7)], HpaLimits(10, 20, 1), POLICY, history, NOW)
    assert history.recommendations == ()
    assert decision.history.recommendations[-1] == (NOW, 1)


def test_bad_data_resets_tracking_so_recovery_waits_before_lowering() -> None:
    bad = decide_min_replicas([kv(None, "stale")], HpaLimits(10, 20, 1), POLICY, SETTLED, NOW)
    later = NOW + timedelta(minutes=1)
    good = decide_min_replicas([kv(0.7)], HpaLimits(10, 20, 1), POLICY, bad.history, later)
    assert good.min_replicas == 10
    assert good.reason == "ScaleDownStabilized"


# -- properties ------------------------------------------------------------------------

uppers = st.one_of(st.none(), st.floats(min_value=0, max_value=1e4, allow_nan=False))
policies = st.builds(
    DecisionPolicy,
    scale_up_step=st.integers(1, 10),
    scale_down_delay_seconds=st.floats(0, 3600),
    scale_down_step=st.integers(1, 10),
    missing_data_hold_seconds=st.floats(0, 7200),
)
histories = st.builds(
    DecisionHistory,
    recommendations=st.lists(
        st.tuples(
            st.integers(0, 7200).map(lambda s: NOW - timedelta(seconds=s)), st.integers(0, 200)
        ),
        max_size=5,
    ).map(tuple),
    tracking_since=st.one_of(st.none(), st.integers(0, 7200).map(ago)),
    bad_since=st.one_of(st.none(), st.integers(0, 7200).map(ago)),
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[SignalForecast], HpaLimits]:
    max_replicas = draw(st.integers(1, 100))
    base = draw(st.integers(1, 100))
    current = draw(st.integers(1, 100))
    replicas = draw(st.integers(0, 120))
    names = draw(st.lists(st.sampled_from(["kv", "rate", "tokens"]), min_size=1, unique=True))
    signals = [
        SignalForecast(
            n,
            draw(uppers),
            draw(st.floats(0.01, 100)),
            "missing",
            draw(st.sampled_from([None, "2 of 3 pods reporting"])),
        )
        for n in names
    ]
    return signals, HpaLimits(current, max_replicas, base, current_replicas=replicas)


@settings(max_examples=400, deadline=None)
@given(scenarios(), policies, histories)
def test_invariants(
    scenario: tuple[list[SignalForecast], HpaLimits],
    policy: DecisionPolicy,
    history: DecisionHistory,
) -> None:
    signals, hpa = scenario
    decision = decide_min_replicas(signals, hpa, policy, history, NOW)
    new = decision.min_replicas
    floor = min(hpa.base_min_replicas, hpa.max_replicas)
    current = min(max(hpa.min_replicas, floor), hpa.max_replicas)

    # Never above maxReplicas, never below the user's base (max wins if they conflict).
    assert floor <= new <= hpa.max_replicas
    # Raises are capped per cycle, counted from what runs (or min when more); lowering by at
    # most one step per cycle.
    running = min(hpa.current_replicas or 0, hpa.max_replicas)
    assert new <= max(current, running) + policy.scale_up_step
    assert new >= current - policy.scale_down_step
    good = [s for s in signals if s.upper is not None]
    if not good:
        # No raise on bad data; no lowering while the hold lasts.
        assert new <= current
        held = (NOW - (history.bad_since or NOW)).total_seconds()
        if held < policy.missing_data_hold_seconds:
            assert new == current
    elif len(good) < len(signals) or any(s.partial for s in good):
        assert new >= current, "partial data never lowers"
    assert decision.steps, "every decision says why"
    # Deterministic: same inputs, same answer.
    again = decide_min_replicas(signals, hpa, policy, history, NOW)
    assert again == decision


# -- the history floor (issue 13: a floor learned from history under the forecast) -----


def test_history_floor_raises_a_low_forecast_to_the_recent_level() -> None:
    # The forecast asks for 2 pods (1.2 / 0.7); the history floor is 7 pods' worth: 10 pods.
    signal = SignalForecast("kv_cache", 1.2, 0.7, floor=7.0)
    d = decide_min_replicas([signal], HpaLimits(10, 40, 1), POLICY, SETTLED, NOW)
    assert (d.min_replicas, d.needed) == (10, 10)
    assert "history floor" in d.message
    # Below the forecast the floor changes nothing.
    signal = SignalForecast("kv_cache", 7.0, 0.7, floor=1.2)
    d = decide_min_replicas([signal], HpaLimits(10, 40, 1), POLICY, SETTLED, NOW)
    assert (d.min_replicas, d.needed) == (10, 10)
    assert "history floor" not in d.message


def test_history_floor_is_a_quantile_of_the_observed_history() -> None:
    history = [float("nan"), 0.0, 1.0, 2.0, 3.0, 4.0]
    assert compute_history_floor(history, 0.5) == 2.0
    assert compute_history_floor(history, 0.0) is None  # off
    assert compute_history_floor([float("nan")], 0.5) is None  # nothing observed
