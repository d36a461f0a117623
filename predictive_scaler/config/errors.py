"""Configuration errors: what broke, where, and a bounded, redacted picture of the value.

Errors are collected in one pass: :class:`ConfigError` carries every :class:`ConfigIssue` found,
each naming the path (``targets[2].scaleDownStep``), the offending value and the rule it broke.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

_MAX_REPR: Final = 80
_REDACTED: Final = "<redacted>"


@dataclass(frozen=True)
class ConfigIssue:
    """One broken rule: where, what was found, and what was expected."""

    path: str
    """Where the value sits, e.g. ``targets[2].scaleDownStep``; ``<yaml>``, ``<file>`` or
    ``<root>`` for problems with the document itself."""

    value: str | None
    """A short ``repr`` of the offending value (at most ~80 characters, secrets redacted);
    ``None`` when the value is missing."""

    rule: str
    """The rule that was broken, e.g. ``must be an integer between 1 and 1000``."""

    def __str__(self) -> str:
        if self.value is None:
            return f"{self.path}: {self.rule}"
        return f"{self.path}: got {self.value}: {self.rule}"


class ConfigError(ValueError):
    """The configuration is invalid; :attr:`errors` lists every issue found, in document order."""

    def __init__(self, errors: list[ConfigIssue]) -> None:
        self.errors: list[ConfigIssue] = list(errors)
        super().__init__("\n".join(str(issue) for issue in self.errors))

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigIssue]]]:
        return (ConfigError, (self.errors,))


class _Invalid(Exception):
    """Raised by a field parser: the value breaks the field's rule (or issues were recorded)."""

    def __init__(self, rule: str | None = None) -> None:
        super().__init__(rule)
        self.rule = rule
        """The rule broken; ``None`` when the parser already recorded detailed issues."""


class _Ctx:
    """Collects issues during one validation pass."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []

    def add(self, path: str, value: object, rule: str, *, secret: bool = False) -> None:
        shown = _REDACTED if secret else _short_repr(value)
        self.issues.append(ConfigIssue(path=path, value=shown, rule=rule))

    def missing(self, path: str, rule: str = "required key is missing") -> None:
        self.issues.append(ConfigIssue(path=path, value=None, rule=rule))


def _short_repr(value: object, limit: int = _MAX_REPR) -> str:
    """A ``repr`` bounded in time and length, even for huge or aliased nested YAML values."""
    out: list[str] = []
    budget = [limit + 1]

    def emit(text: str) -> bool:
        if budget[0] <= 0:
            return False
        out.append(text[: budget[0]])
        budget[0] -= len(text)
        return budget[0] > 0

    def walk(item: object) -> bool:
        if isinstance(item, Mapping):
            if not emit("{"):
                return False
            for index, (key, sub) in enumerate(item.items()):
                if (index and not emit(", ")) or not walk(key) or not emit(": "):
                    return False
                if not walk(sub):
                    return False
            return emit("}")
        if isinstance(item, list | tuple):
            if not emit("["):
                return False
            for index, sub in enumerate(item):
                if (index and not emit(", ")) or not walk(sub):
                    return False
            return emit("]")
        if isinstance(item, datetime | date):
            return emit(repr(item.isoformat()))
        if isinstance(item, str):
            return emit(repr(item[: limit + 1]))
        if isinstance(item, bool | int | float) or item is None:
            text = repr(item) if not isinstance(item, int) or item.bit_length() < 256 else "<int>"
            return emit(text)
        return emit(f"<{type(item).__name__}>")

    walk(value)
    text = "".join(out)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
