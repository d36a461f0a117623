"""A target's policy: its tuning knobs, their field table, the rules between them, and the
:class:`Policy` value built from them.

The one source of the policy's defaults: each :class:`_Field` below holds its key, default,
rule and documentation, and :class:`Policy` takes its defaults from those entries. Which models
need a season is the models' own declaration (``Model.needs_season``), not a list here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from models import MODEL_NAMES, SEASONAL_MODEL_NAMES
from predictive_scaler.config.errors import _Ctx, _Invalid
from predictive_scaler.config.fields import _MAX_TEXT_LEN
from predictive_scaler.config.schema import (
    _boolean_field,
    _check_keys,
    _choice_field,
    _Cross,
    _duration_field,
    _Field,
    _integer_field,
    _number_field,
    _ordered,
)

MODELS: Final = ("auto", *(name for name in MODEL_NAMES if name != "auto"))
"""Model names accepted by ``model``: the forecasting registry's, ``auto`` first."""

SEASONS: Final = ("daily", "weekly")
"""Season names accepted by ``seasons``, in canonical order."""


@dataclass(frozen=True)
class Exclusion:
    """A time range left out of fitting (an incident, a load test)."""

    start: datetime
    """Start, inclusive; timezone-aware (UTC)."""

    end: datetime
    """End, exclusive; timezone-aware (UTC), later than ``start``."""

    reason: str = ""
    """Why the range is excluded (free text)."""


@dataclass(frozen=True)
class Objective:
    """What a target asks of its headroom (``objective:``); exactly one field set. The
    controller then chooses its quantile at each refit (``predictive_scaler.objective``)."""

    max_shortfall_share: float | None = None
    """At most this share of minutes under-provisioned, in (0, 1)."""
    shortfall_price: float | None = None
    """GPU-minutes an under-provisioned pod-minute costs, > 0."""

    def __post_init__(self) -> None:
        share, price = self.max_shortfall_share, self.shortfall_price
        if (share is None) == (price is None):
            raise ValueError("an objective sets exactly one of maxShortfallShare, shortfallPrice")
        if share is not None and not 0 < share < 1:
            raise ValueError(f"maxShortfallShare must be in (0, 1), got {share}")
        if price is not None and not price > 0:
            raise ValueError(f"shortfallPrice must be > 0, got {price}")

    def describe(self) -> str:
        if self.max_shortfall_share is not None:
            return f"at most {100 * self.max_shortfall_share:g}% of minutes under-provisioned"
        return f"an under-provisioned pod-minute costs {self.shortfall_price:g} GPU-minutes"

    def as_dict(self) -> dict[str, float]:
        if self.max_shortfall_share is not None:
            return {"maxShortfallShare": self.max_shortfall_share}
        assert self.shortfall_price is not None
        return {"shortfallPrice": self.shortfall_price}


_OBJECTIVE_KEYS: Final = ("maxShortfallShare", "shortfallPrice")
_OBJECTIVE_RULE: Final = (
    "must be null (off) or a mapping with one key: maxShortfallShare (a share of minutes "
    "in (0, 1)) or shortfallPrice (GPU-minutes per under-provisioned pod-minute, > 0)"
)


def _parse_objective(value: object, ctx: _Ctx, path: str) -> Objective | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) != 1 or set(value) - set(_OBJECTIVE_KEYS):
        raise _Invalid(_OBJECTIVE_RULE)
    ((key, number),) = value.items()
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise _Invalid(_OBJECTIVE_RULE)
    try:
        if key == "maxShortfallShare":
            return Objective(max_shortfall_share=float(number))
        if not math.isfinite(number):
            raise _Invalid(_OBJECTIVE_RULE)
        return Objective(shortfall_price=float(number))
    except ValueError:
        raise _Invalid(_OBJECTIVE_RULE) from None


# ---- exclusions ------------------------------------------------------------------------------

_DATETIME_RULE: Final = "must be an ISO-8601 date-time with a timezone, e.g. 2024-12-24T18:00:00Z"


def _parse_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise _Invalid(_DATETIME_RULE) from None
    else:
        raise _Invalid(_DATETIME_RULE)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _Invalid(_DATETIME_RULE)
    return moment.astimezone(UTC)


_EXCLUSION_KEYS: Final = ("start", "end", "reason")
_EXCLUDE_RULE: Final = (
    "must be a list of {start, end, reason} with ISO-8601 date-times with a timezone "
    "and start < end"
)


def _parse_exclusions(value: object, ctx: _Ctx, path: str) -> tuple[Exclusion, ...]:
    if not isinstance(value, list | tuple):
        raise _Invalid(_EXCLUDE_RULE)
    result: list[Exclusion] = []
    ok = True
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            ctx.add(item_path, item, "must be a mapping with keys: start, end, reason")
            ok = False
            continue
        ok = _check_keys(item, item_path, _EXCLUSION_KEYS, ctx) and ok
        moments: dict[str, datetime] = {}
        for key in ("start", "end"):
            if key not in item:
                ctx.missing(f"{item_path}.{key}")
                ok = False
                continue
            try:
                moments[key] = _parse_datetime(item[key])
            except _Invalid as exc:
                ctx.add(f"{item_path}.{key}", item[key], exc.rule or _DATETIME_RULE)
                ok = False
        reason = item.get("reason", "")
        if not isinstance(reason, str) or len(reason) > _MAX_TEXT_LEN:
            ctx.add(
                f"{item_path}.reason",
                reason,
                f"must be a string of at most {_MAX_TEXT_LEN} characters",
            )
            ok = False
            reason = ""
        if len(moments) == 2:
            if moments["start"] >= moments["end"]:
                ctx.add(f"{item_path}.end", item["end"], "must be later than start")
                ok = False
            else:
                result.append(Exclusion(moments["start"], moments["end"], reason))
    if not ok:
        raise _Invalid(None)
    return tuple(result)


_SEASONS_RULE: Final = "must be a list of distinct values from: " + ", ".join(SEASONS)


def _parse_seasons(value: object, ctx: _Ctx, path: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > len(SEASONS):
        raise _Invalid(_SEASONS_RULE)
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str) or item not in SEASONS or item in seen:
            raise _Invalid(_SEASONS_RULE)
        seen.add(item)
    return tuple(season for season in SEASONS if season in seen)


# ---- policy: defaults and per-target overrides -------------------------------------------------

_INTERVAL = _duration_field(
    "interval",
    "interval_seconds",
    "30s",
    (5, 3600),
    "Cycle period: how often each target is decided.",
)
_HISTORY = _duration_field(
    "history",
    "history_seconds",
    "7d",
    (3600, 90 * 86400),
    "History read from Prometheus to fit the model.",
)
_STEP = _duration_field(
    "step", "step_seconds", "1m", (1, 3600), "Resolution (step) of the Prometheus range query."
)
_WARMUP = _duration_field(
    "warmup",
    "warmup_seconds",
    "10m",
    (1, 7200),
    "Time from pod creation to serving (node, image, weights into GPU memory). The forecast "
    "horizon is warmup + interval.",
)
_QUANTILE = _number_field(
    "quantile",
    "quantile",
    0.9,
    (0.5, 1),
    "Upper quantile of the forecast used for capacity; its maximum over the horizon counts.",
    exclusive=True,
)
_FLOOR_QUANTILE = _number_field(
    "floorQuantile",
    "floor_quantile",
    0.0,
    (0, 0.99),
    "History floor: capacity never goes below this quantile of the demand in the history the "
    "model was fitted on (learned at each refit). 0 turns it off. Helps a steady workload "
    "whose demand returns after lulls faster than a forecast follows; costs GPU-hours on "
    "a bursty one (docs/benchmarks.md).",
    rule="must be a number from 0 (off) to 0.99",
)
_OBJECTIVE: _Field[Objective | None] = _Field(
    "objective",
    "mapping",
    None,
    _OBJECTIVE_RULE,
    "Headroom from an objective: `{maxShortfallShare: 0.01}` (at most 1 % of minutes "
    "under-provisioned) or `{shortfallPrice: P}` (an under-provisioned pod-minute costs P "
    "GPU-minutes). At each refit the controller replays the target's own history through "
    "the backtest's simulator at each candidate quantile and decides on the one that meets "
    "it; `quantile` is then only the fallback while the history is under a day. Off "
    "(`null`): `quantile` decides. Check it first with `backtest --max-shortfall-share` "
    "(docs/benchmarks.md has how it did on the shared traces).",
    _parse_objective,
    "objective",
)
_MODEL = _choice_field(
    "model",
    "model",
    "auto",
    MODELS,
    "Forecast model; `auto` picks one per target by rolling-origin backtest.",
)
_SEASONS_FIELD: _Field[tuple[str, ...]] = _Field(
    "seasons",
    "list of strings",
    SEASONS,
    _SEASONS_RULE,
    "Seasonalities the models may use.",
    _parse_seasons,
    "seasons",
)
_REFIT = _duration_field(
    "refitInterval",
    "refit_interval_seconds",
    "6h",
    (60, 7 * 86400),
    "How often the model is refitted; in between it is only updated.",
)
_SCALE_UP_STEP = _integer_field(
    "scaleUpStep",
    "scale_up_step",
    4,
    (1, 1000),
    "Largest raise of minReplicas per cycle, counted from the larger of the running replicas "
    "and minReplicas (the only brake on a wrong forecast: the HPA jumps straight to a raised "
    "minimum).",
)
_SCALE_DOWN_DELAY = _duration_field(
    "scaleDownDelay",
    "scale_down_delay_seconds",
    "10m",
    (0, 86400),
    "How long the forecast must stay lower before minReplicas is lowered.",
)
_SCALE_DOWN_STEP = _integer_field(
    "scaleDownStep",
    "scale_down_step",
    1,
    (1, 1000),
    "Largest lowering of minReplicas per cycle.",
)
_MISSING_HOLD = _duration_field(
    "missingDataHold",
    "missing_data_hold_seconds",
    "30m",
    (0, 86400),
    "On missing, stale or unusable data, hold minReplicas this long, then decay to the base.",
)
_STALE_AFTER = _duration_field(
    "staleAfter",
    "stale_after_seconds",
    "5m",
    (1, 86400),
    "Data whose newest sample is older than this is stale.",
)
_MIN_HISTORY = _duration_field(
    "minHistory",
    "min_history_seconds",
    "1d",
    (0, 90 * 86400),
    "Less history than this, counted from the first sample, is too short to forecast: hold. "
    "From it on the non-seasonal models decide; seasonal ones join as the history allows.",
)
_DRY_RUN = _boolean_field("dryRun", "dry_run", False, "Decide and report, but never patch the HPA.")
_EXCLUDE: _Field[tuple[Exclusion, ...]] = _Field(
    "exclude",
    "list of exclusions",
    (),
    _EXCLUDE_RULE,
    "Time ranges left out of fitting (incidents, load tests): `{start, end, reason}`; "
    "a target's list replaces the defaults' list.",
    _parse_exclusions,
    "exclude",
    default_doc="`[]`",
)

_POLICY_FIELDS: Final[tuple[_Field[Any], ...]] = (
    _INTERVAL,
    _HISTORY,
    _STEP,
    _WARMUP,
    _QUANTILE,
    _FLOOR_QUANTILE,
    _OBJECTIVE,
    _MODEL,
    _SEASONS_FIELD,
    _REFIT,
    _SCALE_UP_STEP,
    _SCALE_DOWN_DELAY,
    _SCALE_DOWN_STEP,
    _MISSING_HOLD,
    _STALE_AFTER,
    _MIN_HISTORY,
    _DRY_RUN,
    _EXCLUDE,
)


# ---- rules between policy keys ------------------------------------------------------------------


def _seasonal_model_violated(values: Mapping[str, Any]) -> bool:
    return values["model"] in SEASONAL_MODEL_NAMES and not values["seasons"]


def _seasonal_model_message(key: str, values: Mapping[str, Any]) -> str:
    if key == "model":
        return "needs at least one season, but seasons is empty"
    return f"must not be empty when model is {values['model']}"


_POLICY_CROSS: Final = (
    _ordered("step", "history", 10),
    _ordered("interval", "warmup"),
    _ordered("minHistory", "history"),
    _ordered("interval", "refitInterval"),
    _ordered("step", "staleAfter"),
    _Cross(
        ("model", "seasons"),
        "`model` " + " or ".join(SEASONAL_MODEL_NAMES) + " needs a non-empty `seasons`",
        _seasonal_model_violated,
        _seasonal_model_message,
    ),
)


# ---- the value ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The tuning knobs of one target (``defaults:``, overridden per target). Durations in
    seconds."""

    interval_seconds: float = _INTERVAL.default
    """Cycle period."""

    history_seconds: float = _HISTORY.default
    """History read from Prometheus for fitting."""

    step_seconds: float = _STEP.default
    """Prometheus range-query step."""

    warmup_seconds: float = _WARMUP.default
    """Time from pod creation to serving."""

    quantile: float = _QUANTILE.default
    """Upper forecast quantile used for capacity, in (0.5, 1)."""

    floor_quantile: float = _FLOOR_QUANTILE.default
    """History floor: this quantile of the fitted history's demand, under the forecast; 0
    is off."""

    objective: Objective | None = _OBJECTIVE.default
    """Headroom from an objective: the quantile chosen at each refit; None is off."""

    model: str = _MODEL.default
    """Forecast model name, one of :data:`MODELS`."""

    seasons: tuple[str, ...] = _SEASONS_FIELD.default
    """Seasonalities, a subset of :data:`SEASONS` in canonical order."""

    refit_interval_seconds: float = _REFIT.default
    """How often the model is refitted."""

    scale_up_step: int = _SCALE_UP_STEP.default
    """Largest raise of minReplicas per cycle."""

    scale_down_delay_seconds: float = _SCALE_DOWN_DELAY.default
    """How long the forecast must stay lower before lowering minReplicas."""

    scale_down_step: int = _SCALE_DOWN_STEP.default
    """Largest lowering of minReplicas per cycle."""

    missing_data_hold_seconds: float = _MISSING_HOLD.default
    """On bad data, hold this long, then decay to the base."""

    stale_after_seconds: float = _STALE_AFTER.default
    """Newest sample older than this means stale data."""

    min_history_seconds: float = _MIN_HISTORY.default
    """Shorter history is not enough to forecast seasonally."""

    dry_run: bool = _DRY_RUN.default
    """Decide and report, never patch."""

    exclude: tuple[Exclusion, ...] = _EXCLUDE.default
    """Time ranges left out of fitting."""

    @property
    def horizon_seconds(self) -> float:
        """Forecast horizon: warm-up plus one cycle."""
        return self.warmup_seconds + self.interval_seconds


_POLICY_KEYS: Final = tuple(item.key for item in _POLICY_FIELDS)


def _build_policy(values: Mapping[str, Any]) -> Policy:
    kwargs: dict[str, Any] = {item.attr: values[item.key] for item in _POLICY_FIELDS}
    return Policy(**kwargs)


def _builtin_policy_values() -> dict[str, Any]:
    return {item.key: item.default for item in _POLICY_FIELDS}
