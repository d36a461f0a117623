"""``predictive-scaler recommend``: one dry-run pass over the enabled targets, as a table.

Uses the same reconciler as the live loop with patching and Events switched off, so what it
prints is what the controller would do now. Two error figures, kept apart because they can
differ a lot (a morning ramp the backtest never saw):

- ``backtest``: the model's own out-of-sample walk forward over the held-out recent history
  (up to two days, see ``models.base.calibration_points``): the mean absolute error of its
  forecasts at the horizon, and the share of actuals at or below the upper quantile;
- ``live``: what the running controller measured as its forecasts came due, read back from
  Prometheus (``predictive_scaler_forecast_abs_error`` / ``_coverage`` / ``_peak_coverage``
  of the target, last 15 minutes); ``-`` when no controller has published them.

Each signal's PromQL is shown as it ran (``${matchers}`` rendered, the scale target's pods
found). The exit code is 1 when any target has no usable data (every signal has a problem) or
its HPA could not be read.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from predictive_scaler.config import Config, ConfigError, format_duration, load_config_file
from predictive_scaler.config import parse_config as _parse_config
from predictive_scaler.kube import KubeClient, load_api_client
from predictive_scaler.logs import configure_logging
from predictive_scaler.pod_overlap import PodClaims
from predictive_scaler.prometheus import PrometheusError, PrometheusSource, PrometheusUnavailable
from predictive_scaler.promql import escape_promql_string, render_query
from predictive_scaler.reconcile import TargetReconciler
from predictive_scaler.settings import CONFIG_KEY, parse_config_map_ref, prometheus_settings
from predictive_scaler.signals import demand_template
from predictive_scaler.values import CycleReport, KubeApiError, KubeUnavailableError, SignalReport

__all__ = ["RecommendError", "RecommendOptions", "format_table", "recommend", "report_to_json"]


LIVE_WINDOW: Final = "15m"
"""How far back the live figures a running controller published are looked for."""


@dataclass(frozen=True)
class LiveFigures:
    """One signal's live error as the running controller published it, and its PromQL."""

    query: str
    """The signal's demand query as it ran (``${matchers}`` rendered)."""
    abs_error: float | None = None
    coverage: float | None = None
    peak_coverage: float | None = None
    """Share of due windows whose realised peak was at or below the window-peak bound."""


class RecommendError(Exception):
    """A one-line reason why no recommendation could be made (exit code 1)."""


@dataclass(frozen=True)
class RecommendOptions:
    config_file: str | None = None
    config_map: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    prometheus_url: str | None = None
    output: str = "table"


async def recommend(
    options: RecommendOptions,
    out: TextIO,
    *,
    clock: Callable[[], datetime] | None = None,
) -> int:
    """Print the recommendation of every enabled target; 0 when all could be evaluated.

    Raises :class:`RecommendError` (one line) when the cluster, the ConfigMap or Prometheus
    cannot be reached, or the configuration is invalid.
    """
    # Logs go to stderr (quiet), so stdout holds only the table or the JSON.
    configure_logging("console", stream=sys.stderr, level=logging.ERROR, force=True)
    now = clock or (lambda: datetime.now(UTC))
    try:
        api_client = await load_api_client(options.kubeconfig, options.context)
    except Exception as error:  # a broken kubeconfig: many exception types, one message
        raise RecommendError(f"cannot load the Kubernetes configuration: {error}") from None
    try:
        kube = KubeClient(api_client)
        config = await _load_config(options, kube)
        settings = prometheus_settings(config.prometheus, options.prometheus_url)
        if settings is None:
            raise RecommendError("no Prometheus URL: pass --prometheus-url or set prometheus.url")
        async with PrometheusSource(settings) as source:
            try:
                await source.check()
            except PrometheusUnavailable as error:
                raise RecommendError(str(error)) from None
            reports: list[CycleReport] = []
            live: dict[tuple[str, str], LiveFigures] = {}
            claims = PodClaims()
            reconcilers = [
                TargetReconciler(
                    target,
                    source,
                    kube,
                    clock=now,
                    may_patch=lambda: False,
                    dry_run=True,
                    emit_events=False,
                    pod_claims=claims,
                )
                for target in config.enabled_targets()
            ]
            # Every target's pods first, so each decides knowing whose pods overlap its own.
            for reconciler in reconcilers:
                await _find_pods(kube, reconciler, now())
            for reconciler in reconcilers:
                target = reconciler.target
                report = await reconciler.reconcile()
                if report.error_status == 0:
                    raise RecommendError(f"cannot reach the Kubernetes API: {report.error}")
                reports.append(report)
                for state_signal in target.signals:
                    query = render_query(
                        demand_template(state_signal), {}, raw={"matchers": reconciler.matchers}
                    )
                    live[(target.id, state_signal.name)] = LiveFigures(
                        query,
                        await _live(source, "abs_error", target.id, state_signal.name, now()),
                        await _live(source, "coverage", target.id, state_signal.name, now()),
                        await _live(source, "peak_coverage", target.id, state_signal.name, now()),
                    )
    finally:
        await api_client.close()
    if options.output == "json":
        json.dump([report_to_json(r, live) for r in reports], out, indent=2)
        out.write("\n")
    else:
        out.write(format_table(reports, live))
    return 1 if unusable(reports) else 0


async def _find_pods(kube: KubeClient, reconciler: TargetReconciler, now: datetime) -> None:
    """Read the target's pods (its cycle then keeps them); an HPA that cannot be read is
    the cycle's to report."""
    t = reconciler.target
    try:
        snapshot = await kube.read_hpa(t.namespace, t.name)
    except KubeApiError:
        return
    await reconciler.resolve_pods(snapshot, now)


def unusable(reports: Sequence[CycleReport]) -> list[str]:
    """Targets with no usable data: the HPA could not be read, or every signal has a problem."""
    return [
        r.target
        for r in reports
        if r.error is not None or all(s.problem is not None for s in r.signals)
    ]


async def _live(
    source: PrometheusSource, figure: str, target: str, signal: str, at: datetime
) -> float | None:
    """The last value of a live gauge the running controller published for one signal."""
    matchers = f'target="{escape_promql_string(target)}",signal="{escape_promql_string(signal)}"'
    query = f"max(last_over_time(predictive_scaler_forecast_{figure}{{{matchers}}}[{LIVE_WINDOW}]))"
    try:
        value = await source.fetch_instant(query, at)
    except PrometheusError:
        return None  # an optional figure: the table says "-"
    return value if value is not None and math.isfinite(value) else None


async def _load_config(options: RecommendOptions, kube: KubeClient) -> Config:
    try:
        if options.config_file is not None:
            return load_config_file(options.config_file)
        if options.config_map is None:
            raise RecommendError("give --config FILE or --config-map NAMESPACE/NAME")
        namespace, name = parse_config_map_ref(options.config_map)
        try:
            data, _version = await kube.read_configmap(namespace, name)
        except KubeUnavailableError as error:
            raise RecommendError(f"cannot reach the Kubernetes API: {error}") from None
        except KubeApiError as error:
            raise RecommendError(f"cannot read ConfigMap {namespace}/{name}: {error}") from None
        if CONFIG_KEY not in data:
            raise RecommendError(f"ConfigMap {namespace}/{name} has no key {CONFIG_KEY!r}")
        return _parse_config(data[CONFIG_KEY])
    except ConfigError as error:
        first = str(error).splitlines()[0] if str(error) else "invalid"
        more = len(error.errors) - 1
        raise RecommendError(
            f"invalid configuration: {first}" + (f" (and {more} more)" if more > 0 else "")
        ) from None
    except ValueError as error:
        raise RecommendError(str(error)) from None


def report_to_json(
    report: CycleReport, live: Mapping[tuple[str, str], LiveFigures] | None = None
) -> dict[str, Any]:
    figures = live or {}

    def signal_live(s: SignalReport) -> LiveFigures:
        return figures.get((report.target, s.name)) or LiveFigures("")

    return {
        "target": report.target,
        "hpa": f"{report.namespace}/{report.hpa}",
        "at": report.at.isoformat(),
        "minReplicas": report.min_replicas_before,
        "currentReplicas": report.current_replicas,
        "maxReplicas": report.max_replicas,
        "baseMinReplicas": report.base_min_replicas,
        "recommendedMinReplicas": report.recommended,
        "reason": report.reason,
        "message": report.message,
        "error": report.error,
        "overlaps": [
            {"other": o.other, "certain": o.certain, "why": o.why} for o in report.overlaps
        ],
        "signals": [
            {
                "name": s.name,
                "horizonSeconds": s.horizon_seconds,
                "quantile": s.quantile,
                "mean": s.mean,
                "upperAtHorizon": s.upper_at_horizon,
                "upperMax": s.upper_max,
                "targetPerPod": s.target_per_pod,
                "needed": s.needed,
                "model": s.model,
                "problem": s.problem,
                "objective": None
                if s.objective is None
                else {
                    "objective": dict(s.objective.spec),
                    "quantile": s.objective.quantile,
                    "met": s.objective.met,
                    "reason": s.objective.reason,
                },
                "freshness": s.freshness,
                "query": signal_live(s).query or None,
                "liveError": {
                    "method": "the running controller's forecasts as they came due "
                    "(predictive_scaler_forecast_abs_error/_coverage/_peak_coverage, last "
                    f"{LIVE_WINDOW})",
                    "meanAbsError": signal_live(s).abs_error,
                    "coverage": signal_live(s).coverage,
                    "windowPeakCoverage": signal_live(s).peak_coverage,
                },
                "recentError": {
                    "method": "out-of-sample walk forward at the horizon (held-out recent history)",
                    "meanAbsError": s.backtest_abs_error,
                    "coverage": s.backtest_coverage,
                    "windowPeakCoverage": s.backtest_peak_coverage,
                    "forecasts": s.backtest_count,
                },
            }
            for s in report.signals
        ],
    }


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _error_text(label: str, mae: float | None, coverage: float | None, q: str) -> str:
    if mae is None and coverage is None:
        return f"{label} -"
    covered = "-" if coverage is None else f"{100 * coverage:.0f}% <= {q}"
    return f"{label} {_num(mae, 3)}, {covered}"


def _peak_text(coverage: float | None, q: str) -> str:
    return "" if coverage is None else f", window peak {100 * coverage:.0f}% <= {q}"


def format_table(
    reports: Sequence[CycleReport], live: Mapping[tuple[str, str], LiveFigures] | None = None
) -> str:
    """One block per target: the HPA now, each signal's forecast and PromQL, the
    recommendation."""
    figures = live or {}
    lines: list[str] = []
    for r in reports:
        lines.append(f"target {r.target}  (HPA {r.namespace}/{r.hpa})")
        if r.error is not None:
            lines.append(f"  error: {r.error}")
            lines.append("")
            continue
        lines.append(
            f"  now          min {r.min_replicas_before} / replicas {r.current_replicas} / "
            f"max {r.max_replicas}   (base min {r.base_min_replicas})"
        )
        header = (
            f"  {'signal':<14}{'horizon':>8}{'mean':>9}{'upper':>14}{'per pod':>9}"
            f"{'needs':>7}  {'model':<22}error (MAE, coverage): backtest | live"
        )
        lines.append(header)
        for s in r.signals:
            q = f"p{round(s.quantile * 100)}"
            upper = f"{_num(s.upper_max)} ({q})" if s.upper_max is not None else "-"
            seen = figures.get((r.target, s.name)) or LiveFigures("")
            err = (
                _error_text("backtest", s.backtest_abs_error, s.backtest_coverage, q)
                + _peak_text(s.backtest_peak_coverage, q)
                + " | "
                + _error_text("live", seen.abs_error, seen.coverage, q)
                + _peak_text(seen.peak_coverage, q)
            )
            lines.append(
                f"  {s.name:<14}{format_duration(s.horizon_seconds):>8}{_num(s.mean):>9}"
                f"{upper:>14}{_num(s.target_per_pod, 3):>9}"
                f"{'-' if s.needed is None else s.needed:>7}  {s.model or '-':<22}{err}"
            )
            if s.objective is not None:
                lines.append(f"    objective    {s.objective.objective}: {s.objective.reason}")
            if seen.query:
                lines.append(f"    query        {seen.query}")
            if s.freshness == "grid":
                lines.append(
                    "    freshness judged on the grid: not of the presets' shape "
                    "sum(M1{${matchers}} [or M2{${matchers}} ...]), so no sample timestamps "
                    "(staleAfter reads up to 5m late, through Prometheus' lookback)"
                )
            if s.problem is not None:
                lines.append(f"    problem: {s.problem}")
        change = (
            "no change"
            if r.recommended == r.min_replicas_before
            else f"{r.min_replicas_before} -> {r.recommended}"
        )
        lines.append(f"  recommended  minReplicas {r.recommended} ({change})")
        lines.append(f"  reason       {r.reason}: {r.message}")
        for o in r.overlaps:
            kind = "pods overlap with" if o.certain else "pods may overlap with"
            lines.append(f"  overlap      {kind} {o.other}: {o.why}")
        lines.append("")
    if not reports:
        lines.append("no enabled targets")
    bad = unusable(reports)
    if bad:
        lines.append(f"no usable data: {', '.join(bad)}")
    lines.append(
        "error: mean absolute error and upper-quantile coverage at the horizon, and window "
        "peak = share of windows whose highest point was at or below the bound the decision "
        "takes; backtest = the model's out-of-sample forecasts over the held-out recent "
        "history; live = the running controller's forecasts as they came due (- when none has "
        "published them)."
    )
    return "\n".join(lines) + "\n"
