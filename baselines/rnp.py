"""Scripted comparison policies for the RNP environments, and the vanilla narrow network.

* ``uniform-g`` (g = 1..4): every decided layer computes ``g`` of ``k`` groups, for every image —
  static width reduction of the same backbone.
* ``random``: a uniformly random number of groups at every decided layer.
* The report's *vanilla* baseline is not a policy: it is a separately trained plain network with
  fewer channels in every layer from the start (:func:`vanilla_network`), compared at equal MACs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from baselines.registry import register_policy

UNIFORM_GROUPS = (1, 2, 3, 4)  # the registered uniform policies; a policy errors if g > the env's k


class BatchPolicy:
    """``policy(obs, info)`` for one observation and ``decide_batch(obs)`` for many (RNP runners)."""

    def __init__(self, decide_batch: Callable[[np.ndarray], np.ndarray]):
        self.decide_batch = decide_batch

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        return int(self.decide_batch(np.asarray(obs, dtype=np.float32).reshape(1, -1))[0])


def _uniform_factory(groups: int) -> Callable[[gym.Env], BatchPolicy]:
    def make(env: gym.Env) -> BatchPolicy:
        k = int(env.unwrapped.settings.k)
        if groups > k:
            raise ValueError(f"uniform-{groups} needs k ≥ {groups}; this env has k={k}.")
        return BatchPolicy(lambda obs: np.full(len(obs), groups - 1, dtype=np.int64))

    return make


for _groups in UNIFORM_GROUPS:
    register_policy("RNP", f"uniform-{_groups}",
                    f"compute the first {_groups} channel groups of every decided layer for every image")(
        _uniform_factory(_groups))


@register_policy("RNP", "random", "a uniformly random number of channel groups at every decided layer")
def make_random(env: gym.Env) -> BatchPolicy:
    unwrapped = env.unwrapped
    rng = np.random.default_rng(int(unwrapped.np_random.integers(2**31)))
    k = int(unwrapped.settings.k)
    return BatchPolicy(lambda obs: rng.integers(k, size=len(obs)))


def vanilla_macs(base: str, factor: float, image_shape: tuple[int, ...], num_classes: int) -> int:
    """MACs per image of ``base`` with every layer's channels scaled by ``factor`` (project counter)."""
    from prune_gym.models.grouped_cnn import GroupedCNN, get_backbone_spec
    from prune_gym.pruning.counting import count_macs

    model = GroupedCNN(get_backbone_spec(f"{base}-w{factor:g}"), image_shape[0], num_classes, 1, 0.0)
    return count_macs(model.to_dense(), image_shape)


def width_factor_for_macs(base: str, target_macs: float, image_shape: tuple[int, ...], num_classes: int) -> float:
    """The width factor (2 decimals) whose narrow network's MACs are closest to ``target_macs``."""
    factors = np.round(np.arange(0.10, 1.0001, 0.01), 2)
    costs = np.array([vanilla_macs(base, float(f), image_shape, num_classes) for f in factors])
    return float(factors[np.abs(costs - target_macs).argmin()])


def vanilla_network(dataset: str, base: str, factor: float, data_root: str | None, seed: int = 0,
                    device: str = "auto") -> dict[str, Any]:
    """Train (or load from the weights cache) ``base`` at ``factor``× channels with the backbone's own
    pretraining budget, and score it on the test split: accuracy, MACs, params."""
    from prune_gym.pruning.counting import count_macs, count_params
    from prune_gym.training import BackboneRequest, evaluate_classifier, pretrained_backbone

    name = f"{base}-w{factor:g}"
    model, metrics, data = pretrained_backbone(BackboneRequest(dataset, name, k=1, seed=seed), data_root, device)
    images, labels = data.split("test")
    with torch.inference_mode():
        scores = evaluate_classifier(lambda x: model(x), images, labels, data, next(model.parameters()).device)
    dense = model.to_dense()
    return {"backbone": name, "width_factor": factor, "accuracy": scores["accuracy"],
            "cross_entropy": scores["cross_entropy"], "macs": count_macs(dense, data.image_shape),
            "params": count_params(dense), "pretrain": metrics}
