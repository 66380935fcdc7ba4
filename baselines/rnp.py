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

from prune_gym.baselines.registry import register_policy, register_runner
from prune_gym.data import DEFAULT_VAL_FRACTION
from prune_gym.policies import BatchPolicy
from prune_gym.pretraining import PretrainBudget

UNIFORM_GROUPS = (1, 2, 3, 4)  # the registered uniform policies; a policy errors if g > the env's k


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
                    device: str = "auto", budget: PretrainBudget | None = None,
                    val_fraction: float = DEFAULT_VAL_FRACTION) -> dict[str, Any]:
    """Train (or load from the weights cache) ``base`` at ``factor``× channels and score it on the
    test split: accuracy, MACs, and params (conv/linear weights, as the RNP envs count them).

    ``budget`` is the :class:`~prune_gym.pretraining.PretrainBudget` to train with (default: the
    backbones' default budget) and ``val_fraction`` the validation share carved from the training
    images: pass the RNP env's own (``settings.backbone_request()``), so the narrow network gets
    exactly its backbone's recipe — steps, learning rate, precision and augmentation alike."""
    from prune_gym.pretraining import BackboneRequest, pretrained_backbone
    from prune_gym.pruning.counting import count_macs, trace_layer_costs
    from prune_gym.training import evaluate_classifier

    name = f"{base}-w{factor:g}"
    request = BackboneRequest(dataset, name, k=1, seed=seed, val_fraction=val_fraction,
                              budget=budget or PretrainBudget())
    model, metrics, data = pretrained_backbone(request, data_root, device)
    images, labels = data.split("test")
    with torch.inference_mode():
        scores = evaluate_classifier(lambda x: model(x), images, labels, data, next(model.parameters()).device)
    dense = model.to_dense()
    return {"backbone": name, "width_factor": factor, "accuracy": scores["accuracy"],
            "cross_entropy": scores["cross_entropy"], "macs": count_macs(dense, data.image_shape),
            "params": sum(cost.params() for cost in trace_layer_costs(dense, data.image_shape)), "pretrain": metrics}


@register_runner("RNP")
def rnp_runner(env_id: str, policy: Any, seed: int, env_kwargs: dict[str, Any],
               eval_data: str | None) -> list[dict[str, Any]]:
    """``prune-gym compare``'s runner for RNP: one RNP episode is one image, so a run is the policy
    applied to every test image (or every ``x_test`` image of ``eval_data``) once, in batches; one
    final row per (policy, seed) with the mean MACs (the decision function's own included, see
    :func:`~prune_gym.evaluation.evaluate_rnp_policy`) and parameters per image."""
    import time

    from prune_gym.evaluation import evaluate_rnp_policy, rnp_images

    started = time.perf_counter()
    env = gym.make(env_id, **env_kwargs)
    env.reset(seed=seed)
    reference = gym.make(env_id, **env_kwargs)  # pretrained weights, even if an agent fine-tunes env's
    act = policy.make(env.unwrapped)
    decide = getattr(act, "decide_batch", None)
    if decide is None:
        raise ValueError(f"RNP policy {policy.name!r} has no decide_batch(obs) method; RNP runs score every "
                         "test image at once (see prune_gym.policies.BatchPolicy).")
    images, labels, _ = rnp_images(env.unwrapped, "test", eval_data)
    figures = evaluate_rnp_policy(env.unwrapped, decide, images, labels, reference.unwrapped, latency=False)
    return [{"policy": policy.name, "seed": seed, "cycle": 0, "final": True,
             "test_accuracy": figures["accuracy"], "val_accuracy": None, "cross_entropy": None,
             "macs": figures["mean_macs"], "macs_full": figures["macs_full"], "params": figures["mean_params"],
             "params_full": None, "macs_fraction": figures["mean_macs"] / figures["macs_full"],
             "episode_return": None, "step_s": None, "wall_s": time.perf_counter() - started}]
