"""Whether two targets' pods overlap, from their label selectors alone (no pods listed).

Pure: no I/O. A target's demand is the sum over the series its ``${matchers}`` select; two
targets in one namespace whose selectors can pick the same pods both sum those pods, and each
would scale for the other's load. The HPA controller refuses to scale such HPAs
(``AmbiguousSelector``); :class:`PodClaims` lets the controller find them among its targets.

Labels are compared as PromQL compares them on the series: a missing label reads as the
empty value, every label is independent, and its values are unbounded. So for two selectors
this tells exactly one of:

- ``certain``: one selects every pod the other selects (the same labels, or a subset of the
  other's requirements): the pods of the narrower one are in both sums;
- ``disjoint``: no pod can match both (a label they require different values of);
- ``possible``: a pod could match both but neither contains the other (``app=nim,model=a``
  and ``app=nim,tier=gpu``): only the pods' labels could tell, which we do not read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "OverlapKind",
    "PodClaims",
    "PodOverlap",
    "PodSelection",
    "Requirement",
    "compute_overlap",
    "equality_selection",
]

OverlapKind = Literal["certain", "possible", "disjoint"]


@dataclass(frozen=True)
class Requirement:
    """One requirement on a label: its value is one of ``values`` (``negated``: any other;
    the empty value stands for a missing label, as in PromQL)."""

    key: str
    values: frozenset[str]
    negated: bool = False

    def describe(self) -> str:
        """The requirement in ``kubectl -l`` syntax."""
        if self.values == frozenset({""}):
            return self.key if self.negated else f"!{self.key}"
        if len(self.values) == 1 and "" not in self.values:
            [value] = self.values
            return f"{self.key}{'!=' if self.negated else '='}{value}"
        listed = ",".join(sorted(self.values))
        return f"{self.key} {'notin' if self.negated else 'in'} ({listed})"


@dataclass(frozen=True)
class PodSelection:
    """The pods a target's queries sum over: its namespace and its label requirements."""

    namespace: str
    requirements: tuple[Requirement, ...]

    def describe(self) -> str:
        text = ",".join(r.describe() for r in self.requirements)
        return f"{self.namespace}: {text or 'every pod'}"


def equality_selection(namespace: str, labels: Iterable[tuple[str, str]]) -> PodSelection:
    """A selection of equality labels (a configured ``selector``)."""
    return PodSelection(namespace, tuple(Requirement(k, frozenset({v})) for k, v in labels))


_Allowed = tuple[frozenset[str] | None, frozenset[str]]
"""The values a selection allows a label: ``(only these, None: any)`` minus ``excluded``."""


def _allowed(selection: PodSelection, key: str) -> _Allowed:
    only: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset()
    for r in selection.requirements:
        if r.key != key:
            continue
        if r.negated:
            excluded |= r.values
        else:
            only = r.values if only is None else only & r.values
    if only is not None:
        return only - excluded, frozenset()
    return None, excluded


def _within(inner: _Allowed, outer: _Allowed) -> bool:
    """Every value ``inner`` allows, ``outer`` allows too."""
    inner_only, inner_excluded = inner
    outer_only, outer_excluded = outer
    if inner_only is not None:
        if outer_only is not None:
            return inner_only <= outer_only
        return not inner_only & outer_excluded
    # inner allows all but finitely many values: only an exclusion-only outer can hold them.
    return outer_only is None and outer_excluded <= inner_excluded


def _apart(a: _Allowed, b: _Allowed) -> bool:
    """No value is allowed by both."""
    a_only, a_excluded = a
    b_only, b_excluded = b
    if a_only is not None and b_only is not None:
        return not a_only & b_only
    if a_only is not None:
        return a_only <= b_excluded
    if b_only is not None:
        return b_only <= a_excluded
    return False  # both allow all but finitely many values


def _contains(outer: PodSelection, inner: PodSelection) -> bool:
    keys = {r.key for r in outer.requirements}
    return all(_within(_allowed(inner, k), _allowed(outer, k)) for k in keys)


@dataclass(frozen=True)
class Overlap:
    """What two selections tell about their pods, and why in words."""

    kind: OverlapKind
    why: str


def compute_overlap(a: PodSelection, b: PodSelection) -> Overlap:
    """Whether ``a`` and ``b`` select the same pods (see the module's docstring)."""
    if a.namespace != b.namespace:
        return Overlap("disjoint", "other namespaces")
    keys = sorted({r.key for r in (*a.requirements, *b.requirements)})
    for key in keys:
        if _apart(_allowed(a, key), _allowed(b, key)):
            return Overlap("disjoint", f"they require different values of {key}")
    if _contains(a, b) and _contains(b, a):
        return Overlap("certain", f"both select the same pods ({a.describe()})")
    if _contains(a, b):
        return Overlap("certain", f"{a.describe()} selects every pod of {b.describe()}")
    if _contains(b, a):
        return Overlap("certain", f"{b.describe()} selects every pod of {a.describe()}")
    return Overlap(
        "possible",
        f"a pod labelled for both {a.describe()} and {b.describe()} would be in both sums "
        "(cannot tell without the pods' labels)",
    )


@dataclass(frozen=True)
class PodOverlap:
    """Another target whose pods overlap this one's."""

    other: str
    """The other target's id."""
    kind: Literal["certain", "possible"]
    why: str

    @property
    def certain(self) -> bool:
        return self.kind == "certain"


class PodClaims:
    """The pods each target's queries sum over, as far as known, by target id: what the
    targets of one controller compare theirs against. Unknown pods (a scale target not read
    yet, or unreadable) are not compared."""

    def __init__(self) -> None:
        self._claims: dict[str, tuple[PodSelection, bool]] = {}

    def claim(
        self, target: str, selection: PodSelection | None, *, configured: bool = False
    ) -> None:
        """Record ``target``'s pods (``None``: unknown); ``configured``: from its ``selector``."""
        if selection is None:
            self._claims.pop(target, None)
        else:
            self._claims[target] = (selection, configured)

    def release_configured(self, target: str) -> None:
        """Forget a claim that came from a configured selector (the target no longer has one:
        its pods are unknown until its scale target is read)."""
        held = self._claims.get(target)
        if held is not None and held[1]:
            del self._claims[target]

    def release(self, target: str) -> None:
        """Forget ``target`` (removed from the configuration)."""
        self._claims.pop(target, None)

    def overlaps(self, target: str) -> tuple[PodOverlap, ...]:
        """Every other target whose pods overlap ``target``'s, certain ones first."""
        held = self._claims.get(target)
        if held is None:
            return ()
        found: list[PodOverlap] = []
        for other, (selection, _) in sorted(self._claims.items()):
            if other == target:
                continue
            overlap = compute_overlap(held[0], selection)
            if overlap.kind != "disjoint":
                found.append(PodOverlap(other, overlap.kind, overlap.why))
        return tuple(sorted(found, key=lambda o: (not o.certain, o.other)))
