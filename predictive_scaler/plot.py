"""The backtest picture: demand against ready capacity per policy, and the replicas."""

from __future__ import annotations

from pathlib import Path

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

    fig, axes = plt.subplots(3, 1, figsize=(13, 10.5), constrained_layout=True)
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

    fig.savefig(path, dpi=110)
    plt.close(fig)


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
