"""Durations as the configuration writes them (``30s``, ``1h30m``, ``7d``) and back."""

from __future__ import annotations

import math
import re
from typing import Final

from predictive_scaler.config.errors import _short_repr

_DURATION_UNITS: Final = {
    "w": 604800.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}
_DURATION_RANK: Final = {unit: rank for rank, unit in enumerate(_DURATION_UNITS)}
_DURATION_RE: Final = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|w|d|h|m|s))+")
_DURATION_PART_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|w|d|h|m|s)")
_NUMBER_RE: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MAX_DURATION_SECONDS: Final = 100 * 365 * 86400.0


def parse_duration(text: str | float, *, allow_zero: bool = False) -> float:
    """Parse ``30s``, ``10m``, ``6h``, ``7d``, ``1w``, ``1h30m``, ``500ms`` or a plain number of
    seconds (``90``, ``"90"``, ``1.5``) into float seconds.

    Units must appear largest first, each at most once (``1h30m``, not ``30m1h``). Rejects
    booleans, negatives, non-finite numbers, zero (unless ``allow_zero``), values above 100
    years and anything else with :class:`ValueError`.
    """
    if isinstance(text, bool):
        raise ValueError("a boolean is not a duration")
    if isinstance(text, int | float):
        if not -_MAX_DURATION_SECONDS <= text <= _MAX_DURATION_SECONDS:
            raise ValueError("duration out of range")
        seconds = float(text)
    elif isinstance(text, str):
        stripped = text.strip()
        if len(stripped) > 64:
            raise ValueError("duration text too long")
        if stripped.startswith("-"):
            raise ValueError("duration must not be negative")
        if _NUMBER_RE.fullmatch(stripped):
            seconds = float(stripped)
        elif _DURATION_RE.fullmatch(stripped):
            seconds = 0.0
            last_rank = -1
            for number, unit in _DURATION_PART_RE.findall(stripped):
                rank = _DURATION_RANK[unit]
                if rank <= last_rank:
                    raise ValueError("duration units must be in decreasing order, each once")
                last_rank = rank
                seconds += float(number) * _DURATION_UNITS[unit]
        else:
            raise ValueError(f"not a duration: {_short_repr(text)}")
    else:
        raise ValueError(f"not a duration: {_short_repr(text)}")
    if not math.isfinite(seconds) or seconds > _MAX_DURATION_SECONDS:
        raise ValueError("duration out of range")
    if seconds < 0:
        raise ValueError("duration must not be negative")
    if seconds == 0 and not allow_zero:
        raise ValueError("duration must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds the way the configuration writes them: ``90d``, ``1h30m``, ``0.5s``."""
    if seconds == 0:
        return "0s"
    whole = int(seconds)
    fraction = seconds - whole
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    if whole or fraction:
        parts.append(f"{whole + fraction:g}s" if fraction else f"{whole}s")
    return "".join(parts)
