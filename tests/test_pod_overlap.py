"""Targets whose pods overlap (issue 12 item 4), against the real Prometheus and the API
double, and the table of what two label selectors tell about their pods.

The ``shared`` namespace of ``test_reconcile``: the llama model's 2 pods at 0.9 (needs 3 pods
at 0.7), the mistral model's 2 at 0.1 (needs 1), told apart by their ``app`` label.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from kubernetes_asyncio import client

from predictive_scaler.config import ConfigError, parse_config, parse_config_data
from predictive_scaler.controller import Controller
from predictive_scaler.kube import KubeClient
from predictive_scaler.pod_overlap import (
    PodClaims,
    PodSelection,
    Requirement,
    compute_overlap,
)
from predictive_scaler.promql import selector_requirements
from predictive_scaler.recommend import RecommendOptions, recommend
from tests.kube_double import (
    KubeDouble,
    make_configmap,
    make_deployment,
    make_hpa,
    write_kubeconfig,
)
from tests.prom_fixtures import PrometheusFactory
from tests.prom_harness import PrometheusServer
from tests.support import FakeClock
from tests.test_reconcile import DATA_END, flat_series, min_replicas

DEFAULTS = """\
defaults: {interval: 5m, step: 5m, history: 1d, minHistory: 1h, warmup: 10m,
  model: persistence, seasons: [], refitInterval: 1h}
"""
SHARED = (
    DEFAULTS
    + """\
targets:
  - hpa: {namespace: shared, name: llama}
  - hpa: {namespace: shared, name: llama-copy}
  - hpa: {namespace: shared, name: mistral}
"""
)


@pytest.fixture(scope="module")
def prometheus(prometheus_factory: PrometheusFactory) -> PrometheusServer:
    return prometheus_factory(flat_series())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.fromtimestamp(DATA_END + 60, UTC))


@pytest.fixture
def kube(kube_api: client.ApiClient) -> KubeClient:
    return KubeClient(kube_api, reporting_instance="test")


@pytest.fixture
async def controller(
    kube: KubeClient, prometheus: PrometheusServer, clock: FakeClock
) -> AsyncIterator[Controller]:
    made = Controller(kube, prometheus_url=prometheus.url, clock=clock)
    try:
        yield made
    finally:
        await made.aclose()


def _retarget(server: KubeDouble, name: str, deployment: str) -> None:
    stored = server.get_object("autoscaling/v2", "HorizontalPodAutoscaler", "shared", name)
    assert stored is not None
    stored["spec"]["scaleTargetRef"]["name"] = deployment
    server.put_object(stored)


def _overlap_gauges(controller: Controller) -> set[tuple[str, str, str]]:
    return {
        (v.labels["target"], v.labels["other"], v.labels["certain"])
        for v in controller.metrics.published("predictive_scaler_target_overlap")
    }


async def _cycle(controller: Controller, clock: FakeClock) -> None:
    # A minute on: every target's data stays fresh (it ends at DATA_END) for the whole test.
    await asyncio.wait_for(controller.run_due(force=True), 60)
    clock.advance(60)


async def test_hpas_whose_scale_targets_select_the_same_pods_hold_and_say_why(
    kube_server: KubeDouble, controller: Controller, clock: FakeClock
) -> None:
    # Two HPAs on one Deployment: each target summed the same pods and raised for the other's
    # load too (3 and 3). Now both hold (never raise, never lower) and say why.
    for app in ("llama", "mistral"):
        kube_server.put_object(make_deployment("shared", app, {"app": app}, replicas=2))
    kube_server.put_object(
        make_deployment("shared", "llama-canary", {"app": "llama", "track": "c"})
    )
    kube_server.put_object(make_deployment("shared", "phi", {"app": "phi"}))
    for name, deployment in (("llama", "llama"), ("llama-copy", "llama"), ("mistral", "mistral")):
        kube_server.put_object(make_hpa("shared", name, 1, 10, deployment=deployment))
    controller.apply_config(parse_config(SHARED))
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            await _cycle(controller, clock)
    held = (
        min_replicas(kube_server, "shared", "llama"),
        min_replicas(kube_server, "shared", "llama-copy"),
    )
    assert held == (1, 1), f"overlapping targets raised on each other's demand: {held}"
    assert min_replicas(kube_server, "shared", "mistral") == 1  # its own pods, its own need
    for name, other in (("llama", "llama-copy"), ("llama-copy", "llama")):
        report = controller.last_reports[("shared", name)]
        assert report.reason == "AmbiguousSelector"
        assert f"shared/{other}" in (report.message or "")
        assert report.signals[0].upper_max == pytest.approx(1.8)  # still forecast, reported
    assert controller.last_reports[("shared", "mistral")].reason != "AmbiguousSelector"
    # One Warning Event on each HPA involved (not one a cycle), naming the other target.
    events = [e for e in kube_server.list_events("shared") if e["reason"] == "AmbiguousSelector"]
    by_hpa = {e["involvedObject"]["name"]: e for e in events}
    assert len(events) == 2 and set(by_hpa) == {"llama", "llama-copy"}
    assert all(e["type"] == "Warning" for e in events)
    assert "shared/llama-copy" in by_hpa["llama"]["message"]
    # A log line naming both targets, and a gauge per pair.
    lines = [e for e in logs if e["event"] == "pods_overlap"]
    assert {(e["target"], e["other"]) for e in lines} == {
        ("shared/llama", "shared/llama-copy"),
        ("shared/llama-copy", "shared/llama"),
    }
    assert _overlap_gauges(controller) == {
        ("shared/llama", "shared/llama-copy", "true"),
        ("shared/llama-copy", "shared/llama", "true"),
    }

    # The copy's scale target changes to a Deployment selecting a subset of llama's pods
    # (app=llama,track=c): still the same pods in llama's sum, still held.
    _retarget(kube_server, "llama-copy", "llama-canary")
    await _cycle(controller, clock)
    assert controller.last_reports[("shared", "llama")].reason == "AmbiguousSelector"
    assert min_replicas(kube_server, "shared", "llama") == 1

    # Then to pods of their own: the overlap is gone, llama raises for its own load. (A
    # target deciding before the copy has read its new scale target still holds once: the
    # safe side.)
    _retarget(kube_server, "llama-copy", "phi")
    for _ in range(2):
        await _cycle(controller, clock)
    assert min_replicas(kube_server, "shared", "llama") == 3
    assert _overlap_gauges(controller) == set()

    # A reload that gives the copy a configured selector of llama's pods flags them again:
    # held at 3 (never lowered, never raised further).
    overlapping = SHARED.replace(
        "name: llama-copy}", "name: llama-copy}\n    selector: {app: llama}"
    )
    controller.apply_config(parse_config(overlapping))
    await _cycle(controller, clock)
    assert controller.last_reports[("shared", "llama")].reason == "AmbiguousSelector"
    assert min_replicas(kube_server, "shared", "llama") == 3
    # And a reload without the copy ends it.
    controller.apply_config(
        parse_config(SHARED.replace("  - hpa: {namespace: shared, name: llama-copy}\n", ""))
    )
    await _cycle(controller, clock)
    assert controller.last_reports[("shared", "llama")].reason != "AmbiguousSelector"
    assert _overlap_gauges(controller) == set()


def _sel(text: str, namespace: str = "ns") -> PodSelection:
    return PodSelection(namespace, selector_requirements(text))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("app=nim", "app=nim", "certain"),
        ("app=nim", "app=nim,model=a", "certain"),  # a subset of labels: a's pods include b's
        ("app=nim,model=a", "app=nim", "certain"),
        ("app=nim,model=a", "app=nim,model=b", "disjoint"),
        ("app=nim,model=a", "app=nim,tier=gpu", "possible"),  # a pod may carry both
        ("app in (a,b)", "app=a", "certain"),
        ("app in (a,b)", "app in (c)", "disjoint"),
        ("app in (a,b)", "app in (b,c)", "possible"),
        ("app notin (a)", "app=a", "disjoint"),
        ("app notin (a)", "app=b", "certain"),
        ("app!=a", "app notin (a,b)", "certain"),
        ("app", "app=a", "certain"),
        ("!app", "app=a", "disjoint"),
        ("!canary", "app=a", "possible"),
        ("app=a,!canary", "app=a,canary=yes", "disjoint"),
        ("", "app=a", "certain"),  # the whole namespace
    ],
)
def test_what_two_selectors_tell_about_their_pods(a: str, b: str, expected: str) -> None:
    assert compute_overlap(_sel(a), _sel(b)).kind == expected
    assert compute_overlap(_sel(b), _sel(a)).kind == expected
    assert compute_overlap(_sel(a), _sel(b, "other")).kind == "disjoint"


def test_claims_compare_every_other_target_and_forget_released_ones() -> None:
    claims = PodClaims()
    claims.claim("a", _sel("app=nim"))
    claims.claim("b", _sel("app=nim,model=x"))
    claims.claim("c", _sel("app=phi"))
    [overlap] = claims.overlaps("a")
    assert (overlap.other, overlap.kind) == ("b", "certain")
    assert "app=nim" in overlap.why
    claims.release("b")
    assert claims.overlaps("a") == ()
    claims.claim("c", None)  # unknown pods are not compared
    assert claims.overlaps("c") == ()
    assert Requirement("app", frozenset({"nim"})).describe() == "app=nim"


def test_configured_selectors_whose_pods_contain_anothers_are_flagged() -> None:
    data = {
        "targets": [
            {"hpa": {"namespace": "llm", "name": "a"}, "selector": {"app": "nim"}},
            {"hpa": {"namespace": "llm", "name": "b"}, "selector": {"app": "nim", "m": "x"}},
            {"hpa": {"namespace": "llm", "name": "c"}, "selector": {"app": "nim", "m": "y"}},
        ]
    }
    with pytest.raises(ConfigError) as caught:
        parse_config_data(data)
    paths = [issue.path for issue in caught.value.errors]
    assert paths == ["targets[1].selector", "targets[2].selector"]
    assert "pods overlap: targets[0] selects" in str(caught.value)
    del data["targets"][0]  # b and c: disjoint by m
    assert len(parse_config_data(data).targets) == 2


# ---------------------------------------------------------------- recommend


@pytest.fixture
def kubeconfig(kube_server: KubeDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return str(write_kubeconfig(tmp_path / "kubeconfig", kube_server.url, kube_server.token))


async def test_recommend_names_the_overlap_and_the_freshness_judged_on_the_grid(
    kube_server: KubeDouble, prometheus: PrometheusServer, kubeconfig: str
) -> None:
    kube_server.put_object(make_deployment("shared", "llama", {"app": "llama"}, replicas=2))
    for name in ("llama", "llama-copy"):
        kube_server.put_object(make_hpa("shared", name, 1, 10, deployment="llama"))
    config = (
        DEFAULTS
        + """\
targets:
  - hpa: {namespace: shared, name: llama}
    signals:
      - name: kv_cache
        query: 'sum(gpu_cache_usage_perc{${matchers}})'
        hpaMetric: gpu_cache_usage_perc
      - name: custom
        query: 'sum(max_over_time(gpu_cache_usage_perc{${matchers}}[5m]))'
        hpaMetric: gpu_cache_usage_perc
  - hpa: {namespace: shared, name: llama-copy}
"""
    )
    kube_server.put_object(make_configmap("ops", "scaler", {"config.yaml": config}))
    options = RecommendOptions(
        config_map="ops/scaler", kubeconfig=kubeconfig, prometheus_url=prometheus.url
    )
    out = io.StringIO()
    await asyncio.wait_for(recommend(options, out), 120)
    table = out.getvalue()
    assert "reason       AmbiguousSelector" in table
    assert "overlap      pods overlap with shared/llama-copy" in table
    assert "recommended  minReplicas 1 (no change)" in table
    # The custom query's freshness is judged on the query grid; the preset shape's is not.
    [block] = [b for b in table.split("target ") if b.startswith("shared/llama ")]
    assert block.count("freshness judged on the grid") == 1
    custom_at = block.index("  custom")
    assert block.index("freshness judged on the grid") > custom_at
    out = io.StringIO()
    from dataclasses import replace

    await asyncio.wait_for(recommend(replace(options, output="json"), out), 120)
    rows = {row["target"]: row for row in json.loads(out.getvalue())}
    assert rows["shared/llama"]["overlaps"] == [
        {
            "other": "shared/llama-copy",
            "certain": True,
            "why": rows["shared/llama"]["overlaps"][0]["why"],
        }
    ]
    freshness = {s["name"]: s["freshness"] for s in rows["shared/llama"]["signals"]}
    assert freshness == {"kv_cache": "samples", "custom": "grid"}


async def test_pods_that_only_may_overlap_are_reported_not_held(
    kube_server: KubeDouble, controller: Controller, clock: FakeClock
) -> None:
    # llama (app=llama) and a GPU pool (tier=gpu): a pod labelled both would be in both sums,
    # but only the pods' labels could tell. Reported (Event, gauge, log), never held. A pool
    # selecting app=llama,track notin (canary) is a subset of llama's pods: held.
    kube_server.put_object(make_deployment("shared", "llama", {"app": "llama"}, replicas=2))
    kube_server.put_object(make_deployment("shared", "gpu", {"tier": "gpu"}))
    expressions = [{"key": "track", "operator": "NotIn", "values": ["canary"]}]
    pool = make_deployment("shared", "pool", {"app": "llama"}, match_expressions=expressions)
    kube_server.put_object(pool)
    for name in ("llama", "gpu"):
        kube_server.put_object(make_hpa("shared", name, 1, 10, deployment=name))
    config = SHARED.replace("name: llama-copy}", "name: gpu}").replace(
        "  - hpa: {namespace: shared, name: mistral}\n", ""
    )
    controller.apply_config(parse_config(config))
    for _ in range(2):
        await _cycle(controller, clock)
    assert min_replicas(kube_server, "shared", "llama") == 3  # its own load, not held
    report = controller.last_reports[("shared", "llama")]
    assert report.reason != "AmbiguousSelector"
    [overlap] = report.overlaps
    assert (overlap.other, overlap.certain) == ("shared/gpu", False)
    assert "cannot tell" in overlap.why
    events = [e for e in kube_server.list_events("shared") if "Overlap" in e["reason"]]
    assert {(e["involvedObject"]["name"], e["reason"], e["type"]) for e in events} == {
        ("llama", "PossibleSelectorOverlap", "Warning"),
        ("gpu", "PossibleSelectorOverlap", "Warning"),
    }
    assert ("shared/llama", "shared/gpu", "false") in _overlap_gauges(controller)

    # The pool's set-based selector (status.selector "app=llama,track notin (canary)"):
    # llama's selector contains its pods: certain, held at 3.
    _retarget(kube_server, "gpu", "pool")
    for _ in range(2):
        await _cycle(controller, clock)
    report = controller.last_reports[("shared", "llama")]
    assert report.reason == "AmbiguousSelector", report.message
    assert min_replicas(kube_server, "shared", "llama") == 3
    assert ("shared/llama", "shared/gpu", "true") in _overlap_gauges(controller)
