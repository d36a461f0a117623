"""Argument types of the command line: each checks one flag's value, and argparse reports a
bad one as a usage error naming the flag."""

from __future__ import annotations

import argparse

from predictive_scaler.config import parse_duration


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def floor_quantile_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 0.99:
        raise argparse.ArgumentTypeError(f"must be from 0 (off) to 0.99, got {text}")
    return value


def fraction_arg(text: str) -> float:
    value = float(text)
    if not 0.5 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0.5, 1), got {text}")
    return value


def positive_int_arg(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def positive_float_arg(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_int_arg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def name_list_arg(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())
