"""The long chaos soak (issue 7): many targets, many cycles, random faults from a seeded RNG,
every invariant checked after every cycle. Exits 1 on any violation or loop crash.

    python benchmarks/chaos.py [--targets 20] [--rounds 800] [--seed 7]

The harness is tests/chaos/soak.py (real controller, real Kubernetes client against the API
double, real Prometheus adapter against a fake that speaks the Prometheus HTTP API); the
short run of the same harness is tests/test_chaos_soak.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos.soak import SoakSettings, run_soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=800)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prometheus-fault-rate", type=float, default=0.02)
    parser.add_argument("--outage-rate", type=float, default=0.05)
    parser.add_argument("--slow-share", type=float, default=0.15)
    parser.add_argument("--kube-fault-rate", type=float, default=0.25)
    args = parser.parse_args(argv)
    settings = SoakSettings(
        targets=args.targets,
        rounds=args.rounds,
        seed=args.seed,
        prometheus_fault_rate=args.prometheus_fault_rate,
        outage_rate=args.outage_rate,
        slow_share=args.slow_share,
        kube_fault_rate=args.kube_fault_rate,
    )
    report = asyncio.run(run_soak(settings))
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
