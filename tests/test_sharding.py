"""Sharding: every target has exactly one owner; adding a shard moves about 1/N of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from predictive_scaler.cli import main
from predictive_scaler.config import parse_config
from predictive_scaler.runtime import Controller, RunOptions, run_controller
from predictive_scaler.sharding import Shard, compute_owner, lease_name_for, target_key

KEYS = [target_key(f"ns-{i % 37}", f"model-{i}") for i in range(2_000)]


@pytest.mark.parametrize("count", range(1, 9))
def test_every_target_is_owned_by_exactly_one_shard(count: int) -> None:
    for key in KEYS:
        namespace, name = key.split("/")
        owners = [i for i in range(count) if Shard(i, count).owns(namespace, name)]
        assert owners == [compute_owner(key, count)]


@pytest.mark.parametrize("count", range(1, 9))
def test_shards_are_balanced(count: int) -> None:
    sizes = [0] * count
    for key in KEYS:
        sizes[compute_owner(key, count)] += 1
    expected = len(KEYS) / count
    assert all(abs(size - expected) <= 0.2 * expected for size in sizes), sizes


@pytest.mark.parametrize("count", range(1, 8))
def test_adding_a_shard_moves_only_the_targets_the_new_shard_takes(count: int) -> None:
    moved = [key for key in KEYS if compute_owner(key, count) != compute_owner(key, count + 1)]
    # Rendezvous hashing: a target moves only to the new shard, never between old ones...
    assert all(compute_owner(key, count + 1) == count for key in moved)
    # ...and the new shard takes about its fair share, 1/(N+1).
    share = len(moved) / len(KEYS)
    assert abs(share - 1 / (count + 1)) <= 0.05, share


def test_owner_is_stable_across_processes() -> None:
    """blake2b, not the per-process salted hash(): another interpreter agrees."""
    sample = KEYS[:50]
    here = [compute_owner(key, 5) for key in sample]
    code = (
        "import sys, json\n"
        "from predictive_scaler.sharding import compute_owner\n"
        "keys = json.loads(sys.stdin.read())\n"
        "print(json.dumps([compute_owner(k, 5) for k in keys]))\n"
    )
    import json

    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(out.stdout) == here


@pytest.mark.parametrize(
    ("index", "count"), [(-1, 2), (2, 2), (5, 3), (0, 0)], ids=["negative", "equal", "over", "zero"]
)
def test_invalid_shards_are_rejected(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard(index, count)


def test_lease_name_is_suffixed_only_when_sharded() -> None:
    assert lease_name_for("predictive-scaler", Shard()) == "predictive-scaler"
    assert lease_name_for("predictive-scaler", Shard(1, 3)) == "predictive-scaler-shard-1-of-3"


def test_cli_rejects_an_index_outside_the_count(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["run", "--config", "/nonexistent.yaml", "--shard-index", "3", "--shard-count", "3"]
    )
    assert code == 2
    assert "--shard-index must be in 0..2" in capsys.readouterr().err


async def test_run_controller_rejects_an_invalid_shard() -> None:
    options = RunOptions(config_file="/nonexistent.yaml", shard_index=2, shard_count=2)
    assert await run_controller(options, install_signal_handlers=False) == 2


def _config(n: int) -> str:
    lines = ["prometheus: {url: 'http://127.0.0.1:1'}", "targets:"]
    lines += [f"  - hpa: {{namespace: ns-{i}, name: llm}}" for i in range(n)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_controllers_of_all_shards_manage_every_target_once(count: int) -> None:
    config = parse_config(_config(60))
    managed: list[tuple[str, str]] = []
    for index in range(count):
        controller = Controller(kube=None, shard=Shard(index, count))  # type: ignore[arg-type]  # never called
        controller.apply_config(config)
        managed += list(controller.reconcilers)
        # A target another shard owns is that shard's to restore, not this one's.
        assert not controller.pending_restores
    assert sorted(managed) == sorted((f"ns-{i}", "llm") for i in range(60))
