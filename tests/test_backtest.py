"""The simulator follows the semantics of issue 3 exactly; pinned on hand-computed runs."""

from __future__ import annotations

import numpy as np
import pytest

from predictive_scaler.backtest import (
    SimulatedHpa,
    SimulationSettings,
    _measure,
    _window_max,
    evaluation_start,
    scale_demand,
    simulate,
)

# warm-up 2 steps, stabilisation 2 steps, target 0.5, at 1-minute steps.
SETTINGS = SimulationSettings(
    target=0.5,
    min_replicas=1,
    max_replicas=10,
    warmup_seconds=120,
    stabilization_seconds=120,
    tolerance=0.1,
)


def run_reactive(demand: list[float], min_replicas: int = 1) -> tuple[list[int], list[int]]:
    hpa = SimulatedHpa(SETTINGS, 60.0)
    ready, total = [], []
    for t, d in enumerate(demand):
        ready.append(hpa.ready(t))
        total.append(len(hpa.pods))
        hpa.act(t, d, min_replicas)
    return ready, total


def test_reactive_hpa_by_hand() -> None:
    # t=0: observed 0.4 of 1 ready, ratio 0.8 -> desired ceil(0.8) = 1.
    # t=1: observed min(1.5, 1) = 1 (the gauge saturates), desired 2 -> a pod ready at 3.
    # t=2: still 1 ready, desired 2 = current.
    # t=3: 2 ready, observed 1.5, ratio 1.5 -> desired 3 -> a pod ready at 5.
    # t=4: observed 0.2, desired 1, but 3 was recommended within 120 s -> stays 3.
    # t=5: recommendations in the window are 1 and 1 -> down to 1 (min).
    ready, total = run_reactive([0.4, 1.5, 1.5, 1.5, 0.2, 0.2, 0.2, 0.2])
    assert ready == [1, 1, 1, 2, 2, 3, 1, 1]
    assert total == [1, 1, 2, 2, 3, 3, 1, 1]


def test_reactive_hpa_tolerance_keeps_the_count() -> None:
    # 2 ready pods at 0.52 each: ratio 1.04 is within 10 %, so no change.
    hpa = SimulatedHpa(SETTINGS, 60.0)
    hpa.pods = [0, 0]
    hpa.act(1, 1.04, 1)
    assert len(hpa.pods) == 2


def test_zero_demand_asks_for_min_replicas() -> None:
    hpa = SimulatedHpa(SETTINGS, 60.0)
    hpa.pods = [0, 0, 0]
    for t in range(1, 5):
        hpa.act(t, 0.0, 2)
    assert len(hpa.pods) == 2


def test_scale_down_removes_warming_pods_first() -> None:
    hpa = SimulatedHpa(SETTINGS, 60.0)
    hpa.pods = [0, 0, 9, 9]  # two ready, two warming until step 9
    hpa.recommendations.clear()
    hpa.act(5, 0.6, 1)  # desired ceil(0.6 / 0.5) = 2
    hpa.act(6, 0.6, 1)
    hpa.act(7, 0.6, 1)
    assert sorted(hpa.pods) == [0, 0]


def test_min_replicas_above_current_creates_warming_pods() -> None:
    hpa = SimulatedHpa(SETTINGS, 60.0)
    hpa.act(0, 0.3, 4)
    assert hpa.pods == [0, 2, 2, 2]
    assert hpa.ready(1) == 1
    assert hpa.ready(2) == 4


def test_figures_by_hand() -> None:
    demand = np.array([0.4, 1.5, 1.5, 1.5, 0.2, 0.2, 0.2, 0.2])
    ready, total = run_reactive(list(demand))
    run = _measure(demand, np.array(ready), np.array(total), np.ones(8, dtype=np.int64), 0, 60.0)
    assert run.underprovisioned_minutes == 2.0  # t=1 and t=2
    assert run.unserved_fraction == pytest.approx(1.0 / 5.7)
    assert run.gpu_hours == pytest.approx(14 / 60)  # all pods, warming included
    assert run.scale_events == 3  # 1->2, 2->3, 3->1


def test_oracle_window_covers_t_to_t_plus_warmup_plus_one() -> None:
    demand = np.array([0.0, 0.0, 0.0, 0.0, 3.0, 0.0])
    # Warm-up of 2 steps: the window is t .. t+3.
    np.testing.assert_array_equal(_window_max(demand, 4), [0, 3, 3, 3, 3, 0])


def test_demand_is_scaled_by_the_p99() -> None:
    values = np.arange(1, 101, dtype=float)
    d = scale_demand(values, 0.7, 20)
    assert np.percentile(d, 99) == pytest.approx(14.0)
    with pytest.raises(ValueError, match="99th percentile is 0"):
        scale_demand(np.zeros(10), 0.7, 20)


def test_evaluation_starts_at_seven_days_or_half() -> None:
    assert evaluation_start(100, 60.0) == 50
    assert evaluation_start(30 * 1440, 60.0) == 7 * 1440


def test_simulation_end_to_end_on_a_daily_series() -> None:
    # A quiet night, a one-hour morning ramp to 20x, a plateau, an evening fall.
    step = 600.0
    hour = (np.arange(6 * 144) % 144) / 6.0
    values = 10 + 190 * np.clip(hour - 8, 0, 1) * np.clip(19 - hour, 0, 1)
    result = simulate(values, step, SimulationSettings(warmup_seconds=1200, model="mstl"))
    reactive, predictive, oracle = (result.runs[k] for k in ("reactive", "predictive", "oracle"))
    assert oracle.underprovisioned_minutes == 0.0
    assert predictive.underprovisioned_minutes < reactive.underprovisioned_minutes
    assert predictive.gpu_hours < 1.6 * oracle.gpu_hours
    settings = SimulationSettings()
    assert (predictive.min_replicas >= settings.min_replicas).all()
    assert (predictive.min_replicas <= settings.max_replicas).all()
