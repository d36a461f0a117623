"""A target's policy as the settings of the code it drives: the forecaster and the decision.

Written once, so the live loop and the simulator cannot map a policy differently. The defaults
themselves live in the policy's field table (``config/policy.py``): :class:`DecisionPolicy` has
none of its own (the pure decision layer sits below config and cannot read them), and
:class:`ForecastSettings` takes its from :class:`Policy`. No I/O.
"""

from __future__ import annotations

from predictive_scaler.config import Policy
from predictive_scaler.decision import DecisionPolicy
from predictive_scaler.forecasting import ForecastSettings

__all__ = ["decision_policy", "forecast_settings"]


def decision_policy(policy: Policy) -> DecisionPolicy:
    """The decision's knobs of a target's policy."""
    return DecisionPolicy(
        scale_up_step=policy.scale_up_step,
        scale_down_delay_seconds=policy.scale_down_delay_seconds,
        scale_down_step=policy.scale_down_step,
        missing_data_hold_seconds=policy.missing_data_hold_seconds,
    )


def forecast_settings(policy: Policy) -> ForecastSettings:
    """How the live loop forecasts a target of this policy: at its step, over warm-up plus one
    cycle, from a newest point up to ``staleAfter`` old."""
    return ForecastSettings(
        step_seconds=policy.step_seconds,
        horizon_seconds=policy.horizon_seconds,
        model=policy.model,
        quantile=policy.quantile,
        floor_quantile=policy.floor_quantile,
        seasons=policy.seasons,
        history_seconds=policy.history_seconds,
        refit_interval_seconds=policy.refit_interval_seconds,
        max_age_seconds=policy.stale_after_seconds,
    )
