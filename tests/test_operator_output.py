"""What an operator reads: a follower's recommendation log says it is not the leader, and
``--metrics-bind-address`` reaches the server that serves /metrics."""

from __future__ import annotations

import structlog

from predictive_scaler.cli import build_parser, run_options
from predictive_scaler.kube import KubeClient
from predictive_scaler.prometheus import PrometheusSource
from predictive_scaler.reconcile import TargetReconciler
from tests.kube_double import KubeDouble, make_hpa
from tests.support import FakeClock
from tests.test_keda import clock, kube, prometheus, source, target  # noqa: F401 (fixtures)


async def test_a_follower_logs_that_it_is_not_the_leader(
    kube_server: KubeDouble,
    kube: KubeClient,  # noqa: F811
    source: PrometheusSource,  # noqa: F811
    clock: FakeClock,  # noqa: F811
) -> None:
    kube_server.put_object(make_hpa("busy", "nim", 1, 10))  # needs 3: a leader would raise it
    follower = TargetReconciler(target("busy"), source, kube, clock=clock, may_patch=lambda: False)
    with structlog.testing.capture_logs() as logs:
        report = await follower.reconcile()
    assert report.recommended == 3 and report.applied == 1
    [line] = [e for e in logs if e["event"] == "min_replicas_recommended"]
    assert (line["leader"], line["dry_run"]) == (False, False)


def test_metrics_bind_address_flag_reaches_the_run_options() -> None:
    parser = build_parser()
    args = parser.parse_args(["run", "--config", "c.yaml", "--metrics-bind-address", "127.0.0.1"])
    assert run_options(args).metrics_host == "127.0.0.1"
    default = parser.parse_args(["run", "--config", "c.yaml"])
    assert run_options(default).metrics_host == "0.0.0.0"
