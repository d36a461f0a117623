"""What a decision carries besides its number: every step's value, the messages an operator
reads, the history the next cycle starts from, and the time boundaries of the delays. Each
case here kills a mutant of ``decision.py`` that the table in test_decision.py let live
(docs/testing.md)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from predictive_scaler.decision import (
    DESIRED_WITHIN_RANGE,
    FAILED_GET_METRIC,
    MISSING_DATA_DECAY,
    PARTIAL_METRICS,
    SCALE_DOWN_LIMIT,
    SCALE_DOWN_STABILIZED,
    SCALE_UP_LIMIT,
    TOO_FEW_REPLICAS,
    TOO_MANY_REPLICAS,
    DecisionHistory,
    DecisionPolicy,
    HpaLimits,
    SignalForecast,
    decide_min_replicas,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
DELAY = 900.0
HOLD = 1800.0
POLICY = DecisionPolicy(
    scale_up_step=4,
    scale_down_delay_seconds=DELAY,
    scale_down_step=1,
    missing_data_hold_seconds=HOLD,
)
SETTLED = DecisionHistory(tracking_since=NOW - timedelta(hours=1))


def kv(upper: float | None, problem: str | None = None) -> SignalForecast:
    return SignalForecast("kv_cache", upper, 0.7, problem)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


TIME_BOUNDARIES = [
    # (id, signals, (min, max, base), history, expected min, expected reason)
    (
        "good data for exactly the delay lowers",
        [kv(0.7)],
        (10, 20, 1),
        DecisionHistory(tracking_since=ago(DELAY)),
        9,
        SCALE_DOWN_LIMIT,
    ),
    (
        "good data one second short of the delay holds",
        [kv(0.7)],
        (10, 20, 1),
        DecisionHistory(tracking_since=ago(DELAY - 1)),
        10,
        SCALE_DOWN_STABILIZED,
    ),
    (
        "a recommendation exactly the delay old is forgotten",
        [kv(0.7)],
        (10, 20, 1),
        DecisionHistory(recommendations=((ago(DELAY), 10),), tracking_since=ago(3600)),
        9,
        SCALE_DOWN_LIMIT,
    ),
    (
        "a recommendation one second younger than the delay holds",
        [kv(0.7)],
        (10, 20, 1),
        DecisionHistory(recommendations=((ago(DELAY - 1), 10),), tracking_since=ago(3600)),
        10,
        SCALE_DOWN_STABILIZED,
    ),
    (
        "bad data for exactly the hold decays",
        [kv(None, "stale")],
        (8, 20, 1),
        DecisionHistory(bad_since=ago(HOLD)),
        7,
        MISSING_DATA_DECAY,
    ),
    (
        "bad data one second short of the hold holds",
        [kv(None, "stale")],
        (8, 20, 1),
        DecisionHistory(bad_since=ago(HOLD - 1)),
        8,
        FAILED_GET_METRIC,
    ),
]


@pytest.mark.parametrize(
    ("signals", "limits", "history", "expected", "reason"),
    [case[1:] for case in TIME_BOUNDARIES],
    ids=[case[0] for case in TIME_BOUNDARIES],
)
def test_time_boundaries(
    signals: list[SignalForecast],
    limits: tuple[int, int, int],
    history: DecisionHistory,
    expected: int,
    reason: str,
) -> None:
    decision = decide_min_replicas(signals, HpaLimits(*limits), POLICY, history, NOW)
    assert (decision.min_replicas, decision.reason) == (expected, reason)


def steps(decision_steps: object) -> list[tuple[str, int]]:
    return [(s.reason, s.value) for s in decision_steps]  # type: ignore[attr-defined]


STEPS = [
    # (id, signals, (min, max, base, current replicas), history, (needed, steps))
    ("within range", [kv(3.4)], (2, 20, 1, None), SETTLED, (5, [(DESIRED_WITHIN_RANGE, 5)])),
    (
        "raised to the base",
        [kv(0.7)],
        (3, 20, 3, None),
        SETTLED,
        (1, [(DESIRED_WITHIN_RANGE, 1), (TOO_FEW_REPLICAS, 3)]),
    ),
    (
        "capped at max",
        [kv(100.0)],
        (18, 20, 1, None),
        SETTLED,
        (143, [(DESIRED_WITHIN_RANGE, 143), (TOO_MANY_REPLICAS, 20)]),
    ),
    (
        "raise braked",
        [kv(7.0)],
        (1, 20, 1, None),
        SETTLED,
        (10, [(DESIRED_WITHIN_RANGE, 10), (SCALE_UP_LIMIT, 5)]),
    ),
    (
        "lowering braked",
        [kv(0.7)],
        (10, 20, 1, None),
        SETTLED,
        (1, [(DESIRED_WITHIN_RANGE, 1), (SCALE_DOWN_LIMIT, 9)]),
    ),
    (
        "lowering held by the delay",
        [kv(0.7)],
        (10, 20, 1, None),
        DecisionHistory(tracking_since=ago(60)),
        (1, [(DESIRED_WITHIN_RANGE, 1), (SCALE_DOWN_STABILIZED, 10)]),
    ),
    (
        "lowering to the highest recent need",
        [kv(0.7)],
        (10, 20, 1, None),
        DecisionHistory(recommendations=((ago(60), 9),), tracking_since=ago(3600)),
        (1, [(DESIRED_WITHIN_RANGE, 1), (SCALE_DOWN_STABILIZED, 9)]),
    ),
    (
        "partial data holds",
        [kv(0.7), SignalForecast("tokens", None, 100.0, "prometheus unreachable")],
        (10, 20, 1, None),
        SETTLED,
        (1, [(DESIRED_WITHIN_RANGE, 1), (PARTIAL_METRICS, 10)]),
    ),
    (
        "no data holds",
        [kv(None, "stale")],
        (8, 20, 1, None),
        SETTLED,
        (None, [(FAILED_GET_METRIC, 8)]),
    ),
    (
        "no data past the hold decays",
        [kv(None, "stale")],
        (8, 20, 1, None),
        DecisionHistory(bad_since=ago(HOLD + 60)),
        (None, [(MISSING_DATA_DECAY, 7)]),
    ),
    # A base of 0 with nothing reported running: the brake counts from 0, not from 1 pod.
    (
        "brake from zero with no replicas reported",
        [kv(7.0)],
        (0, 20, 0, None),
        SETTLED,
        (10, [(DESIRED_WITHIN_RANGE, 10), (SCALE_UP_LIMIT, 4)]),
    ),
    (
        "brake from zero with zero replicas running",
        [kv(7.0)],
        (0, 20, 0, 0),
        SETTLED,
        (10, [(DESIRED_WITHIN_RANGE, 10), (SCALE_UP_LIMIT, 4)]),
    ),
]


@pytest.mark.parametrize(
    ("signals", "limits", "history", "expected"),
    [case[1:] for case in STEPS],
    ids=[case[0] for case in STEPS],
)
def test_every_step_carries_its_value(
    signals: list[SignalForecast],
    limits: tuple[int, int, int, int | None],
    history: DecisionHistory,
    expected: tuple[int | None, list[tuple[str, int]]],
) -> None:
    min_replicas, max_replicas, base, running = limits
    hpa = HpaLimits(min_replicas, max_replicas, base, current_replicas=running)
    decision = decide_min_replicas(signals, hpa, POLICY, history, NOW)
    assert (decision.needed, steps(decision.steps)) == expected
    assert decision.min_replicas == decision.steps[-1].value


def test_the_message_names_the_leading_signal() -> None:
    # "kv_cache" sorts before "tokens": the leader is the larger need, not the larger name.
    signals = [kv(7.0), SignalForecast("tokens", 100.0, 100.0)]
    decision = decide_min_replicas(signals, HpaLimits(10, 20, 1), POLICY, SETTLED, NOW)
    assert decision.steps[0].message == "kv_cache needs 10 replicas"


def test_partial_and_missing_messages_name_each_signal_and_why() -> None:
    signals = [
        SignalForecast("kv_cache", 0.7, 0.7, partial="2 of 4 pods reporting"),
        SignalForecast("tokens", None, 100.0, "prometheus unreachable"),
    ]
    decision = decide_min_replicas(signals, HpaLimits(10, 20, 1), POLICY, SETTLED, NOW)
    assert decision.steps[-1].message == (
        "not lowering without kv_cache (2 of 4 pods reporting), tokens (prometheus unreachable)"
    )
    none = [kv(None, "stale"), SignalForecast("tokens", None, 100.0)]
    held = decide_min_replicas(none, HpaLimits(8, 20, 1), POLICY, SETTLED, NOW)
    assert held.message == "holding 8: kv_cache: stale, tokens: no forecast"


def test_history_carries_tracking_and_bad_since_forward() -> None:
    tracking = ago(3600)
    for limits in [(2, 20, 1), (5, 20, 1), (10, 20, 1)]:  # raise, equal, lower
        decision = decide_min_replicas(
            [kv(3.4)], HpaLimits(*limits), POLICY, DecisionHistory(tracking_since=tracking), NOW
        )
        assert decision.history.tracking_since == tracking, limits
        assert decision.history.recommendations == ((NOW, 5),), limits
    partial = [kv(0.7), SignalForecast("tokens", None, 100.0, "prometheus unreachable")]
    held = decide_min_replicas(partial, HpaLimits(10, 20, 1), POLICY, SETTLED, NOW)
    assert held.history.tracking_since == NOW
    assert held.history.recommendations == ((NOW, 1),)
    bad_since = ago(HOLD + 60)
    for history in [DecisionHistory(bad_since=bad_since), DecisionHistory(bad_since=ago(60))]:
        decision = decide_min_replicas(
            [kv(None, "stale")], HpaLimits(8, 20, 1), POLICY, history, NOW
        )
        assert decision.history.bad_since == history.bad_since


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scale_up_step": 0}, "scale steps must be >= 1"),
        ({"scale_down_step": 0}, "scale steps must be >= 1"),
        ({"scale_down_delay_seconds": -1}, "delays must be >= 0"),
        ({"missing_data_hold_seconds": -1}, "delays must be >= 0"),
    ],
)
def test_each_policy_knob_is_checked_on_its_own(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=rf"^{message}$"):
        replace(POLICY, **fields)


def test_argument_errors_say_exactly_what_is_wrong() -> None:
    hpa = HpaLimits(1, 5, 1)
    with pytest.raises(ValueError, match=r"^now must be timezone-aware$"):
        decide_min_replicas([kv(1.0)], hpa, POLICY, SETTLED, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match=r"^a decision needs at least one signal$"):
        decide_min_replicas([], hpa, POLICY, SETTLED, NOW)


def test_stabilised_holds_say_why_and_keep_the_history() -> None:
    hpa = HpaLimits(10, 20, 1)
    waiting = DecisionHistory(tracking_since=ago(60))
    held = decide_min_replicas([kv(0.7)], hpa, POLICY, waiting, NOW)
    assert held.steps[-1].message == "holding 10 until the forecast stays lower for 900s"
    assert held.history.tracking_since == waiting.tracking_since
    # A recent need at the current value holds for the same reason, not as a lowering.
    at_current = DecisionHistory(recommendations=((ago(60), 10),), tracking_since=ago(3600))
    same = decide_min_replicas([kv(0.7)], hpa, POLICY, at_current, NOW)
    assert same.steps[-1].message == "holding 10 until the forecast stays lower for 900s"
    below = DecisionHistory(recommendations=((ago(60), 9),), tracking_since=ago(3600))
    lowered = decide_min_replicas([kv(0.7)], hpa, POLICY, below, NOW)
    assert lowered.steps[-1].message == "highest recent need is 9"
