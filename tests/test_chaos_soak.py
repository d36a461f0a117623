"""The short chaos soak: 5 targets x 80 rounds with random Prometheus, Kubernetes, config,
fit-pool and process faults (tests/chaos/soak.py), every fault kind drawn at least once
(``cover``); every invariant is checked after every round. The long run is
`python benchmarks/chaos.py` (docs/reliability.md)."""

from __future__ import annotations

from tests.chaos import PROMETHEUS_FAULTS
from tests.chaos.soak import KUBE_FAULTS, QUERY_FAULTS, SoakReport, SoakSettings, run_soak


async def test_short_chaos_soak_keeps_every_invariant() -> None:
    report = await run_soak(
        SoakSettings(
            targets=5,
            rounds=80,
            seed=11,
            kube_fault_rate=0.5,
            outage_rate=0.15,
            outage_rounds=2,
            slow_share=0.02,
            hung_share=0.05,
            prometheus_fault_rate=0.04,
            query_fault_rate=0.05,
            hung_rate=0.003,
            fit_workers=1,
            cover=True,
        )
    )
    assert report.violations == [], report.render()
    assert report.loop_crashes == 0 and report.internal_errors == 0, report.render()
    assert report.restored == 5, report.render()
    assert report.cycles >= 250, report.render()
    assert report.bad_data_cycles > 0 and report.patches > 0
    missing = {*PROMETHEUS_FAULTS, *QUERY_FAULTS, *KUBE_FAULTS} - {
        kind for kind, count in report.faults.items() if count
    }
    assert not missing, f"never injected: {sorted(missing)}\n{report.render()}"
    assert report.fit_kills > 0 and report.pools_replaced > 0, report.render()
    assert report.failovers > 0 and report.restarts > 0, report.render()
    assert report.twin_checks > 0 and report.twin_fidelity > 0, report.render()
    assert report.watch_restarts["unauthorized"] > 0, report.render()
    assert report.watch_restarts["expired"] > 0, report.render()


def test_the_summary_counts_the_raises_above_the_complete_data() -> None:
    # The line said "N raised, none above the complete data's decision" whatever the count.
    report = SoakReport(SoakSettings(), twin_checks=9, twin_raises=3, twin_raises_above=1)
    assert "9 faulted cycles (3 raised, 1 of them above the complete data's decision)" in (
        report.render()
    )
