"""Which controller shard owns which target: rendezvous (highest-random-weight) hashing.

Pure: no I/O, no clock, no randomness. A fleet too large for one pod runs N controller
Deployments with ``--shard-index I --shard-count N``; each owns the targets whose key scores
highest for its index, elects its own leader (a Lease per shard), and ignores the others.

The weight of (target, shard) is a blake2b digest of both (stable across processes and
Python versions, unlike ``hash()``, which is salted per process). Every target has exactly
one owner for any N, and going from N to N + 1 shards moves only the targets the new shard
wins, about 1/(N + 1) of them; none moves between the old shards.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["Shard", "compute_owner", "lease_name_for", "target_key"]


def target_key(namespace: str, name: str) -> str:
    """The key a target is hashed by: its HPA's ``namespace/name`` (not the display id, so
    renaming a target's id does not move it)."""
    return f"{namespace}/{name}"


def _weight(key: str, index: int) -> int:
    digest = hashlib.blake2b(
        key.encode("utf-8"), digest_size=8, person=b"ps-shard", salt=index.to_bytes(16, "big")
    ).digest()
    return int.from_bytes(digest, "big")


def compute_owner(key: str, count: int) -> int:
    """The index in ``[0, count)`` of the shard that owns ``key``."""
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    if count == 1:
        return 0
    # Ties (a 64-bit collision) go to the lower index, deterministically.
    return max(range(count), key=lambda index: (_weight(key, index), -index))


@dataclass(frozen=True)
class Shard:
    """This process's shard: ``index`` of ``count``."""

    index: int = 0
    """This shard's index, ``0 <= index < count``."""
    count: int = 1
    """Number of shards (controller Deployments) sharing the targets."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"--shard-count must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"--shard-index must be in 0..{self.count - 1} for --shard-count "
                f"{self.count}, got {self.index}"
            )

    def owns(self, namespace: str, name: str) -> bool:
        """Whether this shard manages the HPA ``namespace/name``."""
        return self.count == 1 or compute_owner(target_key(namespace, name), self.count) == (
            self.index
        )


def lease_name_for(base: str, shard: Shard) -> str:
    """The leader-election Lease of ``shard``: ``base`` for one shard, else
    ``<base>-shard-<index>-of-<count>`` (so the replicas of each shard elect separately)."""
    if shard.count == 1:
        return base
    return f"{base}-shard-{shard.index}-of-{shard.count}"
