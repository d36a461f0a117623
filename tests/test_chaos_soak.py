"""The short chaos soak: 8 targets x 125 rounds with random Prometheus, Kubernetes, config and
process faults (tests/chaos/soak.py); every invariant is checked after every round. The long
run is `python benchmarks/chaos.py` (docs/reliability.md)."""

from __future__ import annotations

from tests.chaos.soak import KUBE_FAULTS, SoakSettings, run_soak


async def test_short_chaos_soak_keeps_every_invariant() -> None:
    report = await run_soak(
        SoakSettings(targets=8, rounds=125, seed=11, kube_fault_rate=0.4, slow_share=0.02)
    )
    assert report.violations == [], report.render()
    assert report.loop_crashes == 0 and report.internal_errors == 0, report.render()
    assert report.restored == 8, report.render()
    assert report.cycles >= 600
    assert report.bad_data_cycles > 0 and report.patches > 0
    injected = {kind for kind, count in report.faults.items() if count}
    assert len(injected) >= 18, report.render()  # most kinds of fault were exercised
    assert injected & set(KUBE_FAULTS)
