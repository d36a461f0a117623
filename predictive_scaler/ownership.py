"""Who else reconciles an HPA: a pure check of its owner references and labels.

An HPA that another controller owns is rebuilt by that controller from its own object: KEDA
writes ``minReplicas`` from the ScaledObject's ``minReplicaCount`` on every reconcile, an
operator (the NIM Operator's NIMService, for one) from its custom resource. Patching such an
HPA starts a fight: the owner reverts the patch, the controller adopts the revert as a hand
edit of the base, raises again, and so on. So such an HPA is never patched; the target reports
why instead. No I/O here: the reconciler passes the HPA it read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from predictive_scaler.values import HpaSnapshot

__all__ = [
    "KEDA_GROUP",
    "KEDA_SCALED_OBJECT_LABEL",
    "REASON_OWNED_BY_CONTROLLER",
    "REASON_OWNED_BY_KEDA",
    "ForeignOwner",
    "find_foreign_owner",
]

REASON_OWNED_BY_KEDA: Final = "OwnedByKEDA"
REASON_OWNED_BY_CONTROLLER: Final = "OwnedByController"
KEDA_GROUP: Final = "keda.sh"
KEDA_SCALED_OBJECT_LABEL: Final = "scaledobject.keda.sh/name"
"""The label KEDA puts on the HPA it makes for a ScaledObject (and on its metric selector)."""
_KEDA_MANAGED_BY: Final = "keda-operator"
_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
_PART_OF: Final = "app.kubernetes.io/part-of"


@dataclass(frozen=True)
class ForeignOwner:
    """The controller that owns an HPA, and how that was found."""

    reason: str
    """:data:`REASON_OWNED_BY_KEDA` or :data:`REASON_OWNED_BY_CONTROLLER`."""
    owner: str
    """``Kind/name`` of the owning object (``ScaledObject/llama``)."""
    evidence: str
    """What says so: the owner reference, or the label."""

    @property
    def message(self) -> str:
        """Why the HPA is left alone, for the Event, the log and the annotation-less report."""
        if self.reason == REASON_OWNED_BY_KEDA:
            return (
                f"not patched: the HPA belongs to KEDA {self.owner} ({self.evidence}), which "
                "rewrites minReplicas from the ScaledObject; the forecast is still published: "
                "scale on it with KEDA's prometheus trigger (docs/operations.md#keda)"
            )
        return (
            f"not patched: the HPA is controlled by {self.owner} ({self.evidence}), which "
            "reconciles its spec and would revert minReplicas; the forecast is still published"
        )


def _group(api_version: str) -> str:
    group, slash, _version = api_version.rpartition("/")
    return group if slash else ""


def find_foreign_owner(snapshot: HpaSnapshot) -> ForeignOwner | None:
    """The controller that owns the HPA, or ``None`` when nobody but the user does.

    KEDA: an owner reference in the ``keda.sh`` group (the ScaledObject, set as controller),
    or, when references were stripped (a backup restored, a copy applied from Git), KEDA's own
    labels ``scaledobject.keda.sh/name`` or ``app.kubernetes.io/managed-by: keda-operator``.
    Any other owner reference with ``controller: true`` is another controller's HPA. Owner
    references without ``controller`` (garbage collection only) do not count.
    """
    references: tuple[Mapping[str, Any], ...] = tuple(snapshot.owner_references)
    for ref in references:
        if _group(str(ref.get("apiVersion", ""))) == KEDA_GROUP:
            owner = f"{ref.get('kind', 'ScaledObject')}/{ref.get('name', '')}"
            return ForeignOwner(
                REASON_OWNED_BY_KEDA, owner, f"ownerReference {ref.get('apiVersion')}"
            )
    labels = snapshot.labels
    scaled_object = labels.get(KEDA_SCALED_OBJECT_LABEL)
    if scaled_object:
        return ForeignOwner(
            REASON_OWNED_BY_KEDA,
            f"ScaledObject/{scaled_object}",
            f"label {KEDA_SCALED_OBJECT_LABEL}",
        )
    if labels.get(_MANAGED_BY) == _KEDA_MANAGED_BY:
        name = labels.get(_PART_OF, "")
        return ForeignOwner(
            REASON_OWNED_BY_KEDA, f"ScaledObject/{name}", f"label {_MANAGED_BY}={_KEDA_MANAGED_BY}"
        )
    for ref in references:
        if ref.get("controller") is True:
            api_version = str(ref.get("apiVersion", ""))
            return ForeignOwner(
                REASON_OWNED_BY_CONTROLLER,
                f"{ref.get('kind', '')}/{ref.get('name', '')}",
                f"controller ownerReference {api_version}",
            )
    return None
