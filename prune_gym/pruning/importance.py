"""Importance of units (nodes and filters), kept apart from the mechanics that remove them.

DropNet's metric (Tan & Motani, ICML 2020) scores a unit by its mean absolute post-activation
over the training images: the mean of ``|a|`` over images and, for a filter, over its output
positions. A unit that is (almost) never active scores (almost) 0 and is the first ``min`` drops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

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


# ----------------------------------------------------------------------------------------------
# Filter importance of convolutions followed by a BatchNorm (the static criteria of MaskOffset's table)
# ----------------------------------------------------------------------------------------------

# Each scores the output channels of a convolution; a lower score is pruned first.
FILTER_CRITERIA = ("l1", "l2", "fpgm", "hrank", "bn-scale", "taylor", "random")
_NEEDS_DATA = ("hrank", "taylor")


def filter_scores(
    criterion: str,
    pairs: Sequence[tuple[nn.Conv2d, nn.BatchNorm2d]],
    forward_loss: Callable[[], torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """One score per output channel of every ``(conv, its BatchNorm)`` pair (float64, CPU).

    Criteria (Torch-Pruning's and the MaskOffset thesis's Table 5.1):

    * ``l1`` — L1 norm of the filter (PFEC, Li et al. 2017); ``l2`` — its L2 norm (the soft
      filter pruning criterion, He et al. 2018);
    * ``fpgm`` — the filter's summed Euclidean distance to the layer's other filters: filters near
      the geometric median are the replaceable ones (He et al. 2019);
    * ``hrank`` — mean rank of the channel's feature map (after BN and ReLU) over the images of one
      ``forward_loss()`` call (Lin et al. 2020);
    * ``bn-scale`` — ``|γ|`` of the BatchNorm (network slimming, Liu et al. 2017);
    * ``taylor`` — ``|Σ a·∂L/∂a|`` over positions, mean over images, ``a`` the BN output
      (first-order Taylor, Molchanov et al. 2017), from one ``forward_loss()`` call and its backward;
    * ``random`` — uniform scores from ``generator``.

    Args:
        forward_loss: runs the network on a batch in evaluation mode and returns the loss (needed
            by ``hrank`` and ``taylor``).
    """
    if criterion not in FILTER_CRITERIA:
        raise ValueError(f"Unknown filter criterion {criterion!r}; expected one of {FILTER_CRITERIA}.")
    if criterion in _NEEDS_DATA and forward_loss is None:
        raise ValueError(f"The {criterion} criterion scores feature maps: pass forward_loss.")
    if criterion in _NEEDS_DATA:
        return _activation_scores(criterion, pairs, forward_loss)
    scores = []
    for conv, norm in pairs:
        weights = conv.weight.detach().flatten(1).double().cpu()
        if criterion == "l1":
            scores.append(weights.abs().sum(1))
        elif criterion == "l2":
            scores.append(weights.norm(dim=1))
        elif criterion == "fpgm":
            scores.append(torch.cdist(weights, weights).sum(1))
        elif criterion == "bn-scale":
            scores.append(norm.weight.detach().abs().double().cpu())
        else:
            scores.append(torch.rand(conv.out_channels, generator=generator, dtype=torch.float64))
    return scores


def _activation_scores(criterion: str, pairs: Sequence[tuple[nn.Conv2d, nn.BatchNorm2d]],
                       forward_loss: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []

    def keep(module, inputs, output):
        if criterion == "taylor":
            output.retain_grad()
        outputs.append(output)

    hooks = [norm.register_forward_hook(keep) for _, norm in pairs]
    try:
        if criterion == "taylor":
            forward_loss().backward()
        else:
            with torch.no_grad():
                forward_loss()
    finally:
        for hook in hooks:
            hook.remove()
    if criterion == "taylor":
        return [(output * output.grad).sum((2, 3)).abs().mean(0).double().detach().cpu() for output in outputs]
    return [torch.linalg.matrix_rank(output.relu().double()).double().mean(0).cpu() for output in outputs]
