"""Importance of units (nodes and filters), kept apart from the mechanics that remove them.

DropNet's metric (Tan & Motani, ICML 2020) scores a unit by its mean absolute post-activation
over the training images: the mean of ``|a|`` over images and, for a filter, over its output
positions. A unit that is (almost) never active scores (almost) 0 and is the first ``min`` drops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

ActivationForward = Callable[[torch.Tensor, list], torch.Tensor]


@torch.no_grad()
def mean_abs_activation(forward: ActivationForward, batches: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, one score per unit: the mean of ``|activation|`` over every image of ``batches``
    (and over positions for conv feature maps).

    Args:
        forward: ``forward(images, activations)`` runs the model and appends each scored layer's
            output (N×C×H×W or N×C) to the list ``activations``
            (:meth:`prune_gym.models.masked_net.MaskedNet.forward` does).
        batches: preprocessed image batches (e.g. the whole training split in chunks).

    Returns:
        float64 CPU tensors, one per layer, of shape (units,).
    """
    sums: list[torch.Tensor] | None = None
    count = 0
    for images in batches:
        activations: list[torch.Tensor] = []
        forward(images, activations)
        # Sum over the batch (and positions) here, divide once at the end: an exact mean over all images.
        layer_sums = [a.abs().double().sum(dim=(0, 2, 3)) / (a.shape[2] * a.shape[3]) if a.dim() == 4
                      else a.abs().double().sum(dim=0) for a in activations]
        sums = layer_sums if sums is None else [total + new for total, new in zip(sums, layer_sums)]
        count += len(images)
    if sums is None or count == 0:
        raise ValueError("mean_abs_activation needs at least one image.")
    return [(total / count).cpu() for total in sums]
