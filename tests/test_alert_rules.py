"""The alerts of ``deploy/base/prometheusrule.yaml``, evaluated by ``promtool test rules``.

Series are written as Prometheus Operator scrapes them: the controller's own namespace, job
(the Service's name) and pod on every series, and the target in labels of its own. Both
replicas publish every per-target series (followers forecast too), so each per-target alert
must aggregate the replicas away: one alert per target, whatever the replica count. Under the
dry-run overlay no replica takes the Lease, so PredictiveScalerNoLeader must stay silent there.

Every alert links its runbook: a section of docs/operations.md, found by GitHub's anchor rule.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_support import (
    KUSTOMIZATIONS,
    PORTABLE,
    REPO_ROOT,
    Manifest,
    find_object,
    render,
)

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")

OPERATIONS = REPO_ROOT / "docs" / "operations.md"
RUNBOOK_BASE = "https://github.com/predictive-scaler/predictive-scaler/blob/main/docs/operations.md"
REPLICAS = ("predictive-scaler-7d9f-a", "predictive-scaler-7d9f-b")
TARGETS = (("nim", "meta-llama3-8b-instruct"), ("llm", "mixtral"))


def _rules(objects: list[Manifest], name: str = "predictive-scaler") -> list[dict[str, Any]]:
    spec = find_object(objects, "PrometheusRule", name)["spec"]
    return [item for group in spec["groups"] for item in group["rules"]]


def _scrape_labels(pod: str, namespace: str = "predictive-scaler", job: str = "") -> str:
    job = job or "predictive-scaler"
    return (
        f'job="{job}",namespace="{namespace}",pod="{pod}",service="{job}",'
        f'endpoint="http-metrics",instance="{pod}:8080",container="controller"'
    )


def _series(
    metric: str, values: str, *, signal: bool = True, extra: str = "", **scrape: str
) -> list[dict[str, str]]:
    """One series per replica and target, as both replicas publish them."""
    out = []
    for pod in REPLICAS:
        for namespace, hpa in TARGETS:
            labels = f'{_scrape_labels(pod, **scrape)},target="{namespace}/{hpa}"'
            if metric != "predictive_scaler_patches_total" and not metric.endswith("errors_total"):
                labels += f',target_namespace="{namespace}",hpa="{hpa}"'
            if signal:
                labels += ',signal="kv_cache"'
            out.append({"series": f"{metric}{{{labels}{extra}}}", "values": values})
    return out


def _promtool_test(
    objects: list[Manifest],
    tmp_path: Path,
    series: Sequence[Mapping[str, str]],
    cases: Sequence[Mapping[str, Any]],
    *,
    rule_name: str = "predictive-scaler",
) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` over the rendered rules, annotations left out (the cases assert
    which alerts fire with which labels; the templates are checked by ``promtool check``)."""
    spec = copy.deepcopy(find_object(objects, "PrometheusRule", rule_name)["spec"])
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": list(series), "alert_rule_test": cases}],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False), encoding="utf-8")
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _per_target(alert: str, severity: str, *, signal: bool = True) -> list[dict[str, Any]]:
    expected = []
    for namespace, hpa in TARGETS:
        labels = {"severity": severity, "target": f"{namespace}/{hpa}"}
        if signal:
            labels |= {"target_namespace": namespace, "hpa": hpa, "signal": "kv_cache"}
        expected.append({"exp_labels": labels})
    return expected


class TestOneAlertPerTarget:
    def test_two_replicas_give_one_alert_per_target(self, tmp_path: Path) -> None:
        series = [
            *_series("predictive_scaler_data_ok", "0x120"),
            *_series("predictive_scaler_forecast_coverage", "0.5x120"),
            *_series("predictive_scaler_forecast_abs_error", "3x120"),
            *_series("predictive_scaler_forecast_mean", "4x120", extra=',horizon_seconds="750"'),
            *_series(
                "predictive_scaler_patches_total",
                "0+1x120",
                signal=False,
                extra=',result="failed"',
            ),
            *_series(
                "predictive_scaler_cycle_errors_total",
                "0+1x120",
                signal=False,
                extra=',kind="prometheus"',
            ),
            *_series(
                "predictive_scaler_cycle_errors_total", "0+1x120", signal=False, extra=',kind="fit"'
            ),
        ]
        cases = [
            {
                "eval_time": "100m",
                "alertname": "PredictiveScalerDataMissing",
                "exp_alerts": _per_target("PredictiveScalerDataMissing", "warning"),
            },
            {
                "eval_time": "100m",
                "alertname": "PredictiveScalerForecastCoverageLow",
                "exp_alerts": _per_target("PredictiveScalerForecastCoverageLow", "warning"),
            },
            {
                "eval_time": "100m",
                "alertname": "PredictiveScalerForecastErrorHigh",
                "exp_alerts": _per_target("PredictiveScalerForecastErrorHigh", "info"),
            },
            {
                "eval_time": "100m",
                "alertname": "PredictiveScalerPatchesFailing",
                "exp_alerts": _per_target(
                    "PredictiveScalerPatchesFailing", "warning", signal=False
                ),
            },
            {
                "eval_time": "100m",
                "alertname": "PredictiveScalerCycleErrors",
                "exp_alerts": _per_target("PredictiveScalerCycleErrors", "info", signal=False),
            },
        ]
        result = _promtool_test(render("base"), tmp_path, series, cases)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_one_replica_with_data_is_enough(self, tmp_path: Path) -> None:
        # A follower that lost its data while the other replica still has it is no target-wide
        # outage: the alert speaks for the target, not for one replica.
        lost = _series("predictive_scaler_data_ok", "0x60")
        kept = _series("predictive_scaler_data_ok", "1x60")
        series = [
            *[item for item in lost if REPLICAS[0] in item["series"]],
            *[item for item in kept if REPLICAS[1] in item["series"]],
        ]
        cases = [{"eval_time": "50m", "alertname": "PredictiveScalerDataMissing", "exp_alerts": []}]
        result = _promtool_test(render("base"), tmp_path, series, cases)
        assert result.returncode == 0, result.stdout + result.stderr


def _leader_series(leader: str) -> list[dict[str, str]]:
    return [
        {
            "series": f"predictive_scaler_is_leader{{{_scrape_labels(pod)}}}",
            "values": f"{1 if pod == leader else 0}x60",
        }
        for pod in REPLICAS
    ]


class TestNoLeader:
    def test_fires_once_per_install_without_a_leader(self, tmp_path: Path) -> None:
        cases = [
            {
                "eval_time": "30m",
                "alertname": "PredictiveScalerNoLeader",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "namespace": "predictive-scaler",
                            "job": "predictive-scaler",
                        }
                    }
                ],
            }
        ]
        result = _promtool_test(render("base"), tmp_path, _leader_series(""), cases)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_silent_with_a_leader(self, tmp_path: Path) -> None:
        cases = [{"eval_time": "30m", "alertname": "PredictiveScalerNoLeader", "exp_alerts": []}]
        result = _promtool_test(render("base"), tmp_path, _leader_series(REPLICAS[1]), cases)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_silent_in_dry_run(self, tmp_path: Path) -> None:
        # --dry-run elects no leader: every replica publishes predictive_scaler_is_leader 0, all
        # day long. The overlay's rules must not page for it.
        objects = render("dry-run")
        cases = [{"eval_time": "60m", "alertname": "PredictiveScalerNoLeader", "exp_alerts": []}]
        result = _promtool_test(objects, tmp_path, _leader_series(""), cases)
        assert result.returncode == 0, result.stdout + result.stderr
        # ...while every other alert stays (dry run is where coverage is judged).
        base = {rule["alert"] for rule in _rules(render("base"))}
        assert {rule["alert"] for rule in _rules(objects)} == base - {"PredictiveScalerNoLeader"}


class TestDownFollowsTheMove:
    def test_moved_install_alerts_on_its_own_job_and_namespace(self, tmp_path: Path) -> None:
        directory = tmp_path / "moved"
        directory.mkdir()
        body = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": "ml-platform",
            "namePrefix": "acme-",
            "resources": [os.path.relpath(KUSTOMIZATIONS["base"], directory)],
            "transformers": [os.path.relpath(PORTABLE["base"], directory)],
        }
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(body), encoding="utf-8")
        objects = render(str(directory))
        job = "acme-predictive-scaler"
        up = f"up{{{_scrape_labels(REPLICAS[0], namespace='ml-platform', job=job)}}}"
        cases = [
            {
                "eval_time": "20m",
                "alertname": "PredictiveScalerDown",
                "exp_alerts": [
                    {"exp_labels": {"severity": "warning", "job": job, "namespace": "ml-platform"}}
                ],
            },
            {"eval_time": "50m", "alertname": "PredictiveScalerDown", "exp_alerts": []},
        ]
        result = _promtool_test(
            objects, tmp_path, [{"series": up, "values": "0x30 1x30"}], cases, rule_name=job
        )
        assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------ runbooks


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower-cased, punctuation but ``-`` and ``_``
    dropped, spaces to ``-``; a repeated heading gets ``-1``, ``-2``..."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        seen = counts.get(slug, 0)
        counts[slug] = seen + 1
        anchors.add(slug if seen == 0 else f"{slug}-{seen}")
    return anchors


def test_github_anchors() -> None:
    text = (
        "# Operating it\n## `PredictiveScalerDown`\n```sh\n# not a heading\n```\n"
        "## Uninstall\n## Uninstall\n"
    )
    assert github_anchors(text) == {
        "operating-it",
        "predictivescalerdown",
        "uninstall",
        "uninstall-1",
    }


@pytest.mark.parametrize("overlay", list(KUSTOMIZATIONS))
def test_every_alert_links_an_existing_runbook_section(overlay: str) -> None:
    anchors = github_anchors(OPERATIONS.read_text(encoding="utf-8"))
    for rule in _rules(render(overlay)):
        url = rule["annotations"].get("runbook_url", "")
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_BASE, (rule["alert"], url)
        assert anchor in anchors, (rule["alert"], url, sorted(anchors))
        # Its own section: the runbook of this alert, not a shared page top.
        assert anchor == rule["alert"].lower(), (rule["alert"], url)


def test_down_alert_says_what_the_example_hpa_does() -> None:
    # With deploy/examples/nim-hpa.yaml the forecast is an External metric: when the controller
    # is down it vanishes, and the HPA (FailedGetExternalMetric) scales up on its Pods metric
    # but no longer scales down; the raised minReplicas stays too.
    down = {rule["alert"]: rule for rule in _rules(render("base"))}["PredictiveScalerDown"]
    text = " ".join(down["annotations"].values())
    assert "still scale reactively" not in text, text
    assert "FailedGetExternalMetric" in text, text
    assert "scale down" in text or "scales down" in text, text
