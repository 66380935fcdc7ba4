"""The one table of environment ids.

Every id belongs to a family (:data:`FAMILIES`: one env module each) and maps to an entry point,
a native vector entry point where the family has one, the variant's keyword arguments
(JSON-serialisable, so ``env.spec.to_json()`` round-trips) and the one-line description that
``prune-gym envs`` prints. Variants are kwargs, never subclasses.
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
    # For an arena: the id whose network, actions, observation and reward it keeps at a smaller
    # budget, so an agent trained in the arena may act there (at the family's full budget).
    arena_of: str | None = None

    @property
    def family(self) -> str:
        """The family whose env class this id makes (a key of :data:`FAMILIES`)."""
        return next(family for family, entry_point in FAMILIES.items() if entry_point == self.entry_point)


# family → its env class (one module per family in prune_gym.envs).
FAMILIES: dict[str, str] = {
    "RNP": "prune_gym.envs.rnp:RNPEnv",
    "DropNet": "prune_gym.envs.dropnet:DropNetEnv",
    "LayerPrune": "prune_gym.envs.layerprune:LayerPruneEnv",
    "AlphaBlend": "prune_gym.envs.alphablend:AlphaBlendEnv",
    "MaskOffset": "prune_gym.envs.maskoffset:MaskOffsetEnv",
}
_RNP, _DROPNET, _LAYERPRUNE, _ALPHABLEND, _MASKOFFSET = FAMILIES.values()
_RNP_VECTOR = "prune_gym.envs.rnp:RNPVectorEnv"
# LayerPrune-CIFAR10-Arena-v1's kwargs; v2 is the same arena with another reward weight.
_LAYERPRUNE_CIFAR10_ARENA = {"dataset": "cifar10", "iterations_per_step": 16, "nu_rate": 0.04, "gamma_lr": 0.04,
                             "val_images": 2000, "test_every_step": False}

# The cnn6 and cnn8 ids' pretraining (their shipped weights' request): twice cnn4's 1,200 steps,
# with bf16 forwards (2.0–2.4× faster on this project's CPU, accuracy within 0.6 points of fp32 on
# cnn4's recipe; PretrainBudget's docstring). cnn4 keeps its fp32 recipe, under which its shipped
# weights and every RNP-CIFAR10-v0 figure were made.
_DEEP_CNN_PRETRAINING = {"pretrain_steps": 2400, "pretrain_precision": "bf16"}

ENV_TABLE: tuple[EnvEntry, ...] = (
    EnvEntry(
        "RNP-CIFAR10-v0", _RNP,
        "Runtime Neural Pruning, CIFAR-10, 4-conv backbone (15.0 M MACs/image), k=4 channel groups",
        {"dataset": "cifar10", "backbone": "cnn4"}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-CIFAR10-CNN6-v0", _RNP,
        "Runtime Neural Pruning, CIFAR-10, 6-conv backbone (33.9 M MACs/image), k=4",
        _DEEP_CNN_PRETRAINING | {"dataset": "cifar10", "backbone": "cnn6"}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-CIFAR10-CNN8-v0", _RNP,
        "Runtime Neural Pruning, CIFAR-10, 8-conv backbone (52.8 M MACs/image), k=4",
        _DEEP_CNN_PRETRAINING | {"dataset": "cifar10", "backbone": "cnn8"}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-CIFAR100-v0", _RNP,
        "Runtime Neural Pruning, CIFAR-100, 4-conv backbone, k=4",
        {"dataset": "cifar100", "backbone": "cnn4"}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-MNIST-v0", _RNP,
        "Runtime Neural Pruning, MNIST, 4-conv backbone, k=4",
        # MNIST needs far fewer images than CIFAR-10: 300 steps of 512 are ~3 epochs. At the default
        # peak rate (0.4), with the sandwich losses still summed, its sandwich phase diverged
        # (validation accuracy 14 %, loss 2.96 after 98.9 % at full width); 0.1 is the rate the
        # recipe before trained it with, kept so the shipped cnn4-mnist's request stays this one.
        {"dataset": "mnist", "backbone": "cnn4", "pretrain_steps": 300, "pretrain_lr": 0.1}, _RNP_VECTOR,
    ),
    EnvEntry(
        "RNP-Synthetic-v0", _RNP,
        "Runtime Neural Pruning on a small synthetic dataset (for tests; seconds to pretrain)",
        {"dataset": "synthetic", "backbone": "cnn4", "pretrain_steps": 40}, _RNP_VECTOR,
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
        "LayerPrune-CIFAR10-v1", _LAYERPRUNE,
        "LayerPrune: remove α-linear layers while training a 6-layer CNN on CIFAR-10, 20-epoch budget",
        {"dataset": "cifar10"},
    ),
    # v2 grows the network toward the method report's (full-resolution stem, 64 channels, three
    # resolutions) with flips and shifts, since v1's 8×8, 32-channel net tops out near 70 % at the
    # method's budget (README "LayerPrune"); the actions, observation and reward are v1's.
    EnvEntry(
        "LayerPrune-CIFAR10-v2", _LAYERPRUNE,
        "LayerPrune-CIFAR10-v1 on a larger CNN (stride-1 stem, 64 channels, layers at 16×16, 8×8 and 4×4, "
        "26.5 M MACs/image) trained with flips and shifts",
        {"dataset": "cifar10", "width": 64, "stem_stride": 1, "pool_before": [2, 4], "augment": True},
    ),
    EnvEntry(
        "LayerPrune-MNIST-v1", _LAYERPRUNE,
        "LayerPrune: remove α-linear layers while training a 6-layer CNN on MNIST, 20-epoch budget",
        {"dataset": "mnist"},
    ),
    EnvEntry(
        "AlphaBlend-CIFAR10-v1", _ALPHABLEND,
        "AlphaBlend: hand the trained 4-conv CIFAR-10 network over to branches with 35 % of its parameters",
        {"dataset": "cifar10", "backbone": "cnn4"},
    ),
    EnvEntry(
        "MaskOffset-CIFAR10-v0", _MASKOFFSET,
        "MaskOffset: learned continuous channel masks on CIFAR-10 ResNet-20 (40.6 M MACs/image), the offset as action",
        {"dataset": "cifar10", "network": "resnet20"},
    ),
    EnvEntry(
        "MaskOffset-CIFAR10-ResNet56-v0", _MASKOFFSET,
        "MaskOffset on CIFAR-10 ResNet-56 (125.5 M MACs/image); pretraining it needs a GPU in practice",
        {"dataset": "cifar10", "network": "resnet56"},
    ),
    # v0: the same, except that a spent budget terminates instead of truncating (kept registered).
    EnvEntry(
        "LayerPrune-CIFAR10-v0", _LAYERPRUNE, "LayerPrune-CIFAR10-v1 with v0's episode end (a spent budget terminates)",
        {"dataset": "cifar10", "budget_end": "terminate"},
    ),
    EnvEntry(
        "LayerPrune-MNIST-v0", _LAYERPRUNE, "LayerPrune-MNIST-v1 with v0's episode end (a spent budget terminates)",
        {"dataset": "mnist", "budget_end": "terminate"},
    ),
    EnvEntry(
        "AlphaBlend-CIFAR10-v0", _ALPHABLEND, "AlphaBlend-CIFAR10-v1 with v0's episode end (a spent budget terminates)",
        {"dataset": "cifar10", "backbone": "cnn4", "budget_end": "terminate"},
    ),
    # Arenas: the training-in-the-loop families at a budget where an agent sees hundreds of episodes
    # on a CPU (an episode ≤ 60 s on 2 cores, measured in the README), the family's dynamics kept:
    # the same network, actions, observation and reward, fewer optimiser steps per env step with the
    # rates that set the pace scaled up, and a fixed subset of the validation images scored per step.
    # DropNet-MNIST-FC-v0 needs none: its episodes take seconds at its own budget.
    EnvEntry(
        "DropNet-MNIST-Conv-Arena-v0", _DROPNET,
        "Arena: DropNet-MNIST-Conv-v0 retraining each cycle for at most 2 epochs of batch 64 (patience 1), not 8 of 32",
        {"dataset": "mnist", "network": "conv64-conv32", "max_epochs": 2, "patience": 1, "batch_size": 64},
        arena_of="DropNet-MNIST-Conv-v0",
    ),
    EnvEntry(
        "LayerPrune-MNIST-Arena-v1", _LAYERPRUNE,
        "Arena: LayerPrune-MNIST-v1 with 16 Adam steps per env step (not an epoch), ν and γ rates scaled, "
        "test images scored at reset and the end only",
        {"dataset": "mnist", "iterations_per_step": 16, "nu_rate": 0.04, "gamma_lr": 0.04, "test_every_step": False},
        arena_of="LayerPrune-MNIST-v1",
    ),
    EnvEntry(
        "LayerPrune-CIFAR10-Arena-v1", _LAYERPRUNE,
        "Arena: LayerPrune-CIFAR10-v1 with 16 Adam steps per env step, ν and γ rates scaled, 2,000 val images, "
        "test images scored at reset and the end only",
        _LAYERPRUNE_CIFAR10_ARENA,
        arena_of="LayerPrune-CIFAR10-v1",
    ),
    # v1's reward let a degenerate policy win: its network trains too little for the cross-entropy
    # it gains (2.30 → ~1.6 nats) to outweigh the MAC term of removing every layer (0.94 of the MACs),
    # so "remove every layer" scored 1.215 against the unpruned network's 0.700. At ce_weight 3 (above
    # the 2.2 where the two tie) the head alone loses to the unpruned network (1.76 against 2.10).
    EnvEntry(
        "LayerPrune-CIFAR10-Arena-v2", _LAYERPRUNE,
        "Arena: LayerPrune-CIFAR10-Arena-v1 with ce_weight 3, so removing every layer no longer pays",
        {**_LAYERPRUNE_CIFAR10_ARENA, "ce_weight": 3.0},
        arena_of="LayerPrune-CIFAR10-v1",
    ),
    EnvEntry(
        "AlphaBlend-CIFAR10-Arena-v1", _ALPHABLEND,
        "Arena: AlphaBlend-CIFAR10-v1 with a 12-step budget of 10 Adam steps, 5,000 training and 1,000 val images",
        {"dataset": "cifar10", "backbone": "cnn4", "budget_steps": 12, "iterations_per_step": 10,
         "train_subset": 5000, "val_images": 1000},
        arena_of="AlphaBlend-CIFAR10-v1",
    ),
    EnvEntry(
        "MaskOffset-CIFAR10-Arena-v0", _MASKOFFSET,
        "Arena: MaskOffset-CIFAR10-v0 aiming at 50 % of the FLOPs, 40 pruning and 40 fine-tuning iterations of 32",
        {"dataset": "cifar10", "network": "resnet20", "target_flops": 0.5, "max_iter": 40, "iterations_per_step": 4,
         "batch_size": 32, "finetune_iterations": 40, "val_images": 250},
        arena_of="MaskOffset-CIFAR10-v0",
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


def arena_base(env_id: str) -> str | None:
    """The id an arena keeps the dynamics of (``"LayerPrune-MNIST-Arena-v1"`` →
    ``"LayerPrune-MNIST-v1"``); None for an id that is not an arena or not registered here."""
    try:
        return get_entry(env_id).arena_of
    except gym.error.UnregisteredEnv:  # e.g. Gymnasium's CartPole-v1, which agents also train on
        return None


def family_of(env_id: str) -> str:
    """The family of a registered id: ``"DropNet-MNIST-Conv-v0"`` → ``"DropNet"``."""
    return get_entry(env_id).family


def is_family(env_id: str, family: str) -> bool:
    """Whether ``env_id`` is a registered prune-gym id of ``family`` (False for any other id, e.g.
    Gymnasium's own ``CartPole-v1``, which the agents also train on)."""
    bare_id = env_id.split(":", 1)[-1]
    return any(entry.id == bare_id and entry.family == family for entry in ENV_TABLE)


def ids_of_family(family: str) -> list[str]:
    """Every registered id of ``family``, in table order."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown env family {family!r}; families: {', '.join(FAMILIES)}.")
    return [entry.id for entry in ENV_TABLE if entry.family == family]


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
