"""Scoring a per-image decision function on a set of images: what ``prune-gym evaluate``,
``prune-gym compare`` and the Pareto sweep report for RNP policies.

Every image is classified once by :class:`~prune_gym.pruning.runtime.RuntimePrunedNet` under the
decision function (the code path a deployment runs). The reference is a second runtime — usually
the *pretrained* backbone at full width on the same images (``accuracy_full``, ``macs_full``).

Honest cost: every MAC figure of a policy includes its decision function's own MACs per image
(:func:`~prune_gym.pruning.runtime.decision_macs`; 0 for scripted rules), reported separately as
``decision_macs``; the backbone alone is ``backbone_macs`` / ``macs_ratio_backbone``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

LATENCY_IMAGES = 200  # batch-1 forward passes timed per configuration (after 20 warm-up passes)


def rnp_images(env: Any, split: str, eval_data: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """uint8 images and labels to evaluate on: the env's dataset split, or ``x_test``/``y_test`` of
    any ``.npz`` holding them (training arrays optional; normalised with the training data's
    statistics)."""
    from prune_gym.data import load_npz

    dataset = env.dataset
    if eval_data is None:
        images, labels = dataset.split(split, env.settings.val_fraction)
        return images, labels, f"{dataset.name} {split} split"
    other = load_npz(eval_data, dataset.name)
    if other.image_shape != dataset.image_shape:
        raise ValueError(f"--eval-data {eval_data} holds {other.image_shape} images; the run was trained on "
                         f"{dataset.image_shape}.")
    images, labels = other.split("test")
    return images, labels, f"x_test of {eval_data}"


@torch.inference_mode()
def classify(runtime: Any, decide: Callable[[np.ndarray], Any], images: torch.Tensor, dataset: Any,
             chunk: int = 1000) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Logits, MACs per image and chosen groups (N×D) of ``runtime`` under ``decide``, in chunks."""
    from prune_gym.data import normalize

    outputs = [runtime(normalize(images[start: start + chunk].to(runtime.device), dataset), decide)
               for start in range(0, len(images), chunk)]
    return (torch.cat([output[0] for output in outputs]).float().cpu(), np.concatenate([o[1] for o in outputs]),
            np.concatenate([o[2] for o in outputs]))


def single_image_runner(runtime: Any, decide: Callable[[np.ndarray], Any]) -> tuple[Callable[[torch.Tensor], Any], str]:
    """The batch-1 deployment path of ``runtime`` under ``decide`` and its name:
    :class:`~prune_gym.pruning.deploy.SingleImagePath` (decisions in torch) where ``decide`` offers a
    torch decision cell or is a constant rule, else the runtime itself (numpy decisions, e.g. SB3)."""
    from prune_gym.pruning.deploy import SingleImagePath

    try:
        return SingleImagePath(runtime, decide), "single-image"
    except TypeError:
        return (lambda image: runtime(image, decide)), "runtime"


def batch1_latency_ms(runtime: Any, decide: Callable[[np.ndarray], Any], images: torch.Tensor,
                      dataset: Any) -> tuple[float, str]:
    """Mean wall-clock milliseconds of one image through the batch-1 deployment path of ``runtime``
    under ``decide`` (:func:`single_image_runner`; the decision network's time included), and that
    path's name."""
    from prune_gym.data import normalize
    from prune_gym.pruning.deploy import batch1_ms

    run, path = single_image_runner(runtime, decide)
    return batch1_ms(run, normalize(images[:LATENCY_IMAGES].to(runtime.device), dataset)), path


def evaluate_rnp_policy(env: Any, decide: Callable[[np.ndarray], Any], images: torch.Tensor, labels: torch.Tensor,
                        reference_env: Any, latency: bool = True) -> dict[str, Any]:
    """The figures of one RNP policy on ``images``; ``reference_env`` holds the pretrained backbone.

    MACs are per image. ``mean_macs``, ``macs_std``, ``macs_ratio`` (``macs_full / mean_macs``) and
    ``macs_per_class`` (mean MACs of the images of each true class) include the decision function's
    ``decision_macs``; ``backbone_macs`` and ``macs_ratio_backbone`` leave it out.
    ``groups_distribution`` is the share of images at each group count (1..k), per decided layer.
    """
    from prune_gym.pruning.runtime import decision_macs, uniform_decision

    runtime, dataset = env.runtime, env.dataset
    full = uniform_decision(runtime.k - 1)
    logits, backbone_macs, chosen = classify(runtime, decide, images, dataset)
    reference_logits, macs_full, _ = classify(reference_env.runtime, full, images, dataset)
    finetuned_logits, _, _ = classify(runtime, full, images, dataset)
    deciding = decision_macs(decide)
    macs = backbone_macs + deciding
    label_array = labels.cpu().numpy()
    figures: dict[str, Any] = {
        "mean_params": float(params_used(runtime, chosen).mean()),
        "images": len(labels),
        "accuracy": float((logits.argmax(1) == labels).float().mean()),
        "cross_entropy": float(F.cross_entropy(logits, labels)),
        "accuracy_full": float((reference_logits.argmax(1) == labels).float().mean()),
        "accuracy_full_finetuned": float((finetuned_logits.argmax(1) == labels).float().mean()),
        "mean_macs": float(macs.mean()),
        "macs_std": float(macs.std()),
        "decision_macs": deciding,
        "backbone_macs": float(backbone_macs.mean()),
        "macs_full": int(macs_full[0]),
        "macs_ratio": float(macs_full[0] / macs.mean()),
        "macs_ratio_backbone": float(macs_full[0] / backbone_macs.mean()),
        "macs_per_class": {int(label): float(macs[label_array == label].mean()) for label in np.unique(label_array)},
        "groups_distribution": {
            f"layer{index + 1}": [float((chosen[:, index] == groups).mean()) for groups in range(1, runtime.k + 1)]
            for index in range(chosen.shape[1])},
    }
    if latency:
        figures["latency_full_ms"], _ = batch1_latency_ms(reference_env.runtime, full, images, dataset)
        figures["latency_pruned_ms"], figures["latency_path"] = batch1_latency_ms(runtime, decide, images, dataset)
    return figures


def params_used(runtime: Any, chosen: np.ndarray) -> np.ndarray:
    """Conv/linear weights each image used (its kept channels), given its chosen groups (N×D, 1..k)."""
    count = len(chosen)
    widths = np.full(count, runtime.costs[0].out_units, dtype=np.int64)
    params = np.full(count, runtime.costs[0].params(), dtype=np.int64)
    for index in range(chosen.shape[1]):
        layer = index + 1
        out_widths = runtime.backbone.widths_of(layer, chosen[:, index], count)
        params = params + runtime.costs[layer].params(widths, out_widths)
        widths = out_widths
    return params + runtime.costs[-1].params(widths)
