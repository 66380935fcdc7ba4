"""The one table of environment ids.

Every id maps to an entry point, a native vector entry point where the family has one, the
variant's keyword arguments (JSON-serialisable, so ``env.spec.to_json()`` round-trips) and the
one-line description that ``prune-gym envs`` prints. Variants are kwargs, never subclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym


@dataclass(frozen=True)
class EnvEntry:
    """One registered environment id."""

    id: str
    entry_point: str
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    vector_entry_point: str | None = None


_RNP = "prune_gym.envs.rnp:RNPEnv"
_DROPNET = "prune_gym.envs.dropnet:DropNetEnv"
_LAYERPRUNE = "prune_gym.envs.layerprune:LayerPruneEnv"
_ALPHABLEND = "prune_gym.envs.alphablend:AlphaBlendEnv"
_RNP_VECTOR = "prune_gym.envs.rnp:RNPVectorEnv"

ENV_TABLE: tuple[EnvEntry, ...] = (
    EnvEntry(
        "RNP-CIFAR10-v0", _RNP,
        "Runtime Neural Pruning, CIFAR-10, 4-conv backbone (15.0 M MACs/image), k=4 channel groups",
        {"dataset": "cifar10", "backbone": "cnn4"}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-CIFAR10-CNN6-v0", _RNP,
        "Runtime Neural Pruning, CIFAR-10, 6-conv backbone (33.9 M MACs/image), k=4",
        {"dataset": "cifar10", "backbone": "cnn6"}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-CIFAR10-CNN8-v0", _RNP,
        "Runtime Neural Pruning, CIFAR-10, 8-conv backbone (52.8 M MACs/image), k=4",
        {"dataset": "cifar10", "backbone": "cnn8"}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-CIFAR100-v0", _RNP,
        "Runtime Neural Pruning, CIFAR-100, 4-conv backbone, k=4",
        {"dataset": "cifar100", "backbone": "cnn4"}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-MNIST-v0", _RNP,
        "Runtime Neural Pruning, MNIST, 4-conv backbone, k=4",
        {"dataset": "mnist", "backbone": "cnn4"}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-Synthetic-v0", _RNP,
        "Runtime Neural Pruning on a small synthetic dataset (for tests; seconds to pretrain)",
        {"dataset": "synthetic", "backbone": "cnn4", "pretrain_steps": 150}, _RNP_VECTOR,
    ),
    EnvEntry(
        "DropNet-MNIST-FC-v0", _DROPNET,
        "DropNet drop-and-retrain cycles, MNIST, FC40-FC40 (33.4 k MACs/image), 6 rules or stop",
        {"dataset": "mnist", "network": "fc40-fc40"},
    ),
    EnvEntry(
        "DropNet-MNIST-Conv-v0", _DROPNET,
        "DropNet drop-and-retrain cycles, MNIST, Conv64-Conv32 (4.1 M MACs/image), 6 rules or stop",
        {"dataset": "mnist", "network": "conv64-conv32"},
    ),
    EnvEntry(
        "DropNet-CIFAR10-v0", _DROPNET,
        "DropNet drop-and-retrain cycles, CIFAR-10, Conv64x2-Conv128x2-Dense256 (25.9 M MACs/image), 6 rules or stop",
        {"dataset": "cifar10", "network": "conv64x2-conv128x2-dense256"},
    ),
    EnvEntry(
        "LayerPrune-CIFAR10-v0", _LAYERPRUNE,
        "LayerPrune: remove α-linear layers while training a 6-layer CNN on CIFAR-10, 20-epoch budget",
        {"dataset": "cifar10"},
    ),
    EnvEntry(
        "LayerPrune-MNIST-v0", _LAYERPRUNE,
        "LayerPrune: remove α-linear layers while training a 6-layer CNN on MNIST, 20-epoch budget",
        {"dataset": "mnist"},
    ),
    EnvEntry(
        "AlphaBlend-CIFAR10-v0", _ALPHABLEND,
        "AlphaBlend: hand the trained 4-conv CIFAR-10 network over to branches with 35 % of its parameters",
        {"dataset": "cifar10", "backbone": "cnn4"},
    ),
)


def env_ids() -> list[str]:
    """Every id this package registers, in table order."""
    return [entry.id for entry in ENV_TABLE]


def get_entry(env_id: str) -> EnvEntry:
    """The table row for ``env_id`` (the ``prune_gym:`` module prefix is accepted)."""
    bare_id = env_id.split(":", 1)[-1]
    for entry in ENV_TABLE:
        if entry.id == bare_id:
            return entry
    raise gym.error.UnregisteredEnv(
        f"Unknown environment id {env_id!r}. Registered prune-gym ids: {', '.join(env_ids())}"
    )


def register_envs() -> None:
    """Register every id with Gymnasium; calling it again (or in a spawned process) is harmless."""
    for entry in ENV_TABLE:
        if entry.id in gym.registry:
            continue
        gym.register(
            id=entry.id,
            entry_point=entry.entry_point,
            vector_entry_point=entry.vector_entry_point,
            kwargs=dict(entry.kwargs),
        )
