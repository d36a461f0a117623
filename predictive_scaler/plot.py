"""The backtest picture: demand against ready capacity per policy, and the replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from predictive_scaler.backtest import SimulationResult

COLOURS = {"reactive": "#d62728", "predictive": "#1f77b4", "oracle": "#2ca02c"}
# Drawing order: the policy being judged goes on top.
ORDER = ("oracle", "reactive", "predictive")


def draw_backtest(result: SimulationResult, title: str, path: str | Path) -> None:
    """Three panels: the whole evaluation window, then the worst day for reactive HPA up
    close (demand and ready pods, then replicas and minReplicas)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step_h = result.step_seconds / 3600.0
    start = result.eval_start
    hours = (np.arange(len(result.demand)) - start) * step_h
    window = slice(start, len(result.demand))
    zoom = _worst_day(result)

    panels = 4 if result.frontier else 3
    fig, axes = plt.subplots(
        panels,
        1,
        figsize=(13, 3.5 * panels + (1.5 if result.frontier else 0)),
        constrained_layout=True,
        gridspec_kw={"height_ratios": [1, 1, 1, 1.4][:panels]},
    )
    summary = "   ".join(
        f"{name}: {run.underprovisioned_minutes:.0f} min short, {run.gpu_hours:.0f} GPU-h"
        for name, run in result.runs.items()
    )
    fig.suptitle(f"{title}\n{summary}", fontsize=11)

    ax = axes[0]
    ax.fill_between(hours[window], result.demand[window], color="0.8", label="demand (pods)")
    for name in ORDER:
        run = result.runs[name]
        ax.plot(
            hours[window], run.ready[window], color=COLOURS[name], lw=0.8, label=f"{name} ready"
        )
    ax.set_title("Whole evaluation window: demand vs ready pods")
    ax.set_xlabel("hours since the evaluation started")
    ax.set_ylabel("pods (demand: pods' worth of KV cache)")
    ax.legend(loc="upper right", ncol=4, fontsize=8)
    ax.axvspan(hours[zoom.start], hours[zoom.stop - 1], color="gold", alpha=0.2)

    ax = axes[1]
    ax.fill_between(hours[zoom], result.demand[zoom], color="0.8", label="demand (pods)")
    for name in ORDER:
        run = result.runs[name]
        ax.step(
            hours[zoom],
            run.ready[zoom],
            where="post",
            color=COLOURS[name],
            lw=1.3,
            label=f"{name} ready",
        )
        short = result.demand[zoom] > run.ready[zoom]
        if name != "oracle" and short.any():
            ax.fill_between(
                hours[zoom],
                run.ready[zoom],
                result.demand[zoom],
                where=short,
                step="post",
                color=COLOURS[name],
                alpha=0.25,
                label=f"{name} short of capacity",
            )
    ax.set_title("The 24 hours where reactive HPA fell furthest behind (shaded in the top panel)")
    ax.set_ylabel("pods")
    ax.legend(loc="upper right", ncol=3, fontsize=8)

    ax = axes[2]
    for name in ORDER:
        run = result.runs[name]
        ax.step(
            hours[zoom],
            run.total[zoom],
            where="post",
            color=COLOURS[name],
            lw=1.3,
            label=f"{name} replicas (incl. warming)",
        )
    predictive = result.runs["predictive"]
    ax.step(
        hours[zoom],
        predictive.min_replicas[zoom],
        where="post",
        color=COLOURS["predictive"],
        ls="--",
        lw=1,
        label="minReplicas set by predictive-scaler",
    )
    ax.set_xlabel("hours since the evaluation started")
    ax.set_ylabel("replicas")
    ax.legend(loc="upper right", ncol=2, fontsize=8)

    if result.frontier:
        _draw_frontier(axes[3], result)

    fig.savefig(path, dpi=110)
    plt.close(fig)


FRONTIER_STYLE = {
    "predictive": ("#1f77b4", "o", "predictive-scaler (quantile)"),
    "hpa_target": ("#d62728", "s", "reactive HPA at a lower target"),
    "static_floor": ("#7f7f7f", "^", "static minReplicas floor"),
    "hour_of_week": ("#9467bd", "D", "hour-of-week schedule floor (margin)"),
    "phpa": ("#ff7f0e", "v", "PHPA (Holt-Winters, target)"),
    "oracle": ("#2ca02c", "*", "oracle"),
}


def _draw_frontier(ax: Any, result: SimulationResult) -> None:
    """GPU-hours against under-provisioned minutes, one curve per policy over its knob,
    predictive's default point marked and each baseline's shortfall at its cost."""
    predictive = result.runs["predictive"]
    for name, points in result.frontier.items():
        colour, marker, label = FRONTIER_STYLE.get(name, ("black", ".", name))
        ordered = sorted(points, key=lambda p: p.gpu_hours)
        ax.plot(
            [p.gpu_hours for p in ordered],
            [p.underprovisioned_minutes for p in ordered],
            color=colour,
            marker=marker,
            ms=4 if name != "oracle" else 12,
            lw=1.8 if name == "predictive" else 1.0,
            label=label,
        )
    ax.plot(
        [predictive.gpu_hours],
        [predictive.underprovisioned_minutes],
        marker="*",
        ms=18,
        color=FRONTIER_STYLE["predictive"][0],
        mec="black",
        ls="none",
        label="predictive-scaler at its defaults",
        zorder=5,
    )
    ax.axvline(predictive.gpu_hours, color="0.5", ls=":", lw=1)
    iso = result.iso_cost()
    for name, figures in iso.items():
        colour = FRONTIER_STYLE.get(name, ("black", ".", name))[0]
        ax.plot(
            [predictive.gpu_hours],
            [figures.shortfall_minutes],
            marker="x",
            ms=9,
            mew=2,
            color=colour,
            ls="none",
            zorder=4,
        )
    ratios = ", ".join(
        f"{name} {'-' if v.ratio is None else f'{v.ratio:.2f}'}" for name, v in iso.items()
    )
    ax.set_title(
        "Cost against shortfall, every policy swept over its knob (x: each alternative at "
        f"predictive's GPU-hours)\npredictive's shortfall / alternative's at equal cost: {ratios}",
        fontsize=10,
    )
    oracle = result.runs["oracle"].gpu_hours
    ax.set_xlim(0, 2.5 * oracle)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("GPU-hours over the evaluation window (pods incl. warming)")
    ax.set_ylabel("under-provisioned minutes")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, which="both", color="0.9")


def _worst_day(result: SimulationResult) -> slice:
    """The 24 h of the evaluation window with the most unserved demand under reactive HPA."""
    start, n = result.eval_start, len(result.demand)
    width = max(2, min(round(86_400 / result.step_seconds), n - start))
    gap = np.maximum(result.demand - result.runs["reactive"].ready, 0.0)[start:]
    if len(gap) <= width:
        return slice(start, n)
    sums = np.convolve(gap, np.ones(width), mode="valid")
    first = start + int(np.argmax(sums))
    return slice(first, first + width)
