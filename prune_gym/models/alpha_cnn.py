"""A CNN whose layers learn how non-linear they are, with prune-and-rebuild (the LayerPrune family).

Every removable layer is a 3×3 convolution (equal widths, so any one can be removed), batch norm
and the learned activation

    f(x) = x + α · ReLU(−x),    α = σ((σ(γ) − 0.5) · ν_t),    ν_t = ν_rate · t,

with ``γ`` one learned scalar per layer and ``t`` the number of optimiser steps taken so far
(``ν_rate = 0.01`` by default). ``α = 1`` is a ReLU; ``α = 0`` is the identity, which leaves the
layer purely linear (conv + BN) and a candidate for removal. At ``t = 0`` every ``α`` is 0.5; as
``ν_t`` grows each ``α`` is pushed towards 0 or 1 by the sign of ``σ(γ) − 0.5``.

Removing a layer (:meth:`AlphaCNN.without_layer`) builds a new, smaller dense model and transfers
the weights of every remaining layer, the step counter ``t`` and each layer's γ and α histories.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_NU_RATE = 0.01


def increasing_layer_indices(value: Any, depth: int) -> bool:
    """Whether ``value`` is a sequence of strictly increasing integers in 1..depth (what
    ``pool_before`` must be; bools and strings are not indices)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return False
    if any(isinstance(index, bool) or not isinstance(index, Integral) for index in value):
        return False
    return list(value) == sorted(set(value)) and all(1 <= index <= depth for index in value)


class AlphaActivation(nn.Module):
    """``f(x) = x + α · ReLU(−x)`` with ``α = σ((σ(γ) − 0.5) · ν)``; ``γ`` is learned (initially 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(()))

    def alpha(self, nu: float | torch.Tensor) -> torch.Tensor:
        """α (0–1) at the non-linearity growth ``ν``."""
        return torch.sigmoid((torch.sigmoid(self.gamma) - 0.5) * nu)

    def forward(self, x: torch.Tensor, nu: float | torch.Tensor) -> torch.Tensor:
        return x + self.alpha(nu) * F.relu(-x)


class AlphaLayer(nn.Module):
    """One removable layer: 3×3 conv (no bias) → BN → :class:`AlphaActivation`.

    Attributes:
        origin: the layer's index in the network it was first built in (stable across removals).
        gamma_history, alpha_history: γ and α recorded by :meth:`AlphaCNN.record_history`.
    """

    def __init__(self, width: int, origin: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(width)
        self.activation = AlphaActivation()
        self.origin = origin
        self.gamma_history: list[float] = []
        self.alpha_history: list[float] = []

    def forward(self, x: torch.Tensor, nu: float | torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(x)), nu)


class AlphaCNN(nn.Module):
    """Fixed stem, ``depth`` removable :class:`AlphaLayer` s of equal width, linear head.

    The stem is a 3×3 conv with stride ``stem_stride`` → BN → ReLU → 2×2 max-pool: with the
    default stride 2 it brings 32×32 images to 8×8 (28×28 MNIST to 7×7) so that every removable
    layer is cheap; with stride 1 the layers start at 16×16. ``pool_before`` lists original layer
    indices before which a fixed 2×2 max-pool halves the resolution (a stage boundary: it stays
    when layers on either side are removed, and since every layer keeps its width any one can
    still go). The head is a linear classifier on globally average-pooled features. Inputs are
    images scaled to [0, 1].

    Args:
        in_channels, num_classes: of the dataset.
        width: channels of the stem and every removable layer.
        depth: removable layers.
        nu_rate: ``ν_t = nu_rate · t``, ``t`` counting optimiser steps (:meth:`advance`).
        stem_stride: 1 or 2 (see above).
        pool_before: increasing original layer indices in 1..depth (``depth`` = after the last layer).
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, depth: int = 6,
                 nu_rate: float = DEFAULT_NU_RATE, stem_stride: int = 2, pool_before: tuple[int, ...] = ()) -> None:
        super().__init__()
        if width < 1 or depth < 0:
            raise ValueError(f"width must be ≥ 1 and depth ≥ 0, got width={width}, depth={depth}.")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}.")
        if not increasing_layer_indices(pool_before, depth):
            raise ValueError(f"pool_before must be increasing layer indices in 1..{depth}, got {pool_before!r}.")
        pool_before = tuple(int(index) for index in pool_before)
        self.in_channels, self.num_classes, self.width, self.nu_rate = in_channels, num_classes, width, nu_rate
        self.stem_stride, self.pool_before = stem_stride, pool_before
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2))
        self.layers = nn.ModuleList(AlphaLayer(width, origin) for origin in range(depth))
        self.head = nn.Linear(width, num_classes)
        self.register_buffer("training_step", torch.zeros((), dtype=torch.int64))

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def nu(self) -> float:
        """``ν_t = nu_rate · t``."""
        return self.nu_rate * int(self.training_step)

    def alphas(self) -> list[float]:
        """Current α of every layer, in network order."""
        with torch.no_grad():
            return [float(layer.activation.alpha(self.nu)) for layer in self.layers]

    def gammas(self) -> list[float]:
        return [float(layer.activation.gamma.detach()) for layer in self.layers]

    def advance(self) -> None:
        """Count one optimiser step (``t += 1``)."""
        self.training_step += 1

    def record_history(self) -> None:
        """Append every layer's current γ and α to its history."""
        for layer, gamma, alpha in zip(self.layers, self.gammas(), self.alphas()):
            layer.gamma_history.append(gamma)
            layer.alpha_history.append(alpha)

    def feature_modules(self) -> list[nn.Module]:
        """Everything but the head: what "freezing the convolutional layers" freezes."""
        return [self.stem, self.layers]

    def set_features_frozen(self, frozen: bool) -> None:
        """Freeze (or unfreeze) stem and layers, γ included, so that only the head trains."""
        for module in self.feature_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(not frozen)

    @property
    def features_frozen(self) -> bool:
        return not self.stem[0].weight.requires_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        nu = self.nu
        pools = iter(self.pool_before)
        boundary = next(pools, None)
        for layer in self.layers:
            while boundary is not None and layer.origin >= boundary:  # stage boundaries by original index
                h, boundary = F.max_pool2d(h, 2), next(pools, None)
            h = layer(h, nu)
        while boundary is not None:  # boundaries after the last alive layer
            h, boundary = F.max_pool2d(h, 2), next(pools, None)
        return self.head(h.mean(dim=(2, 3)))

    @torch.no_grad()
    def without_layer(self, position: int) -> AlphaCNN:
        """A new model without the layer at ``position`` (0-based, in network order).

        Stem, head, every remaining layer (conv, BN statistics, γ), the step counter and the γ/α
        histories are copied exactly; the frozen/unfrozen state is kept. The old model is unchanged.
        """
        if not 0 <= position < self.depth:
            raise ValueError(f"No layer at position {position}: this model has layers 0..{self.depth - 1}.")
        rebuilt = AlphaCNN(self.in_channels, self.num_classes, self.width, 0, self.nu_rate, self.stem_stride)
        rebuilt.pool_before = self.pool_before  # original indices: they outlive the layers they precede
        rebuilt.stem.load_state_dict(self.stem.state_dict())
        rebuilt.head.load_state_dict(self.head.state_dict())
        rebuilt.training_step.copy_(self.training_step)
        for index, layer in enumerate(self.layers):
            if index == position:
                continue
            kept = AlphaLayer(self.width, layer.origin)
            kept.load_state_dict(layer.state_dict())
            kept.gamma_history = list(layer.gamma_history)
            kept.alpha_history = list(layer.alpha_history)
            rebuilt.layers.append(kept)
        rebuilt.set_features_frozen(self.features_frozen)
        parameter = self.head.weight
        return rebuilt.to(parameter.device).train(self.training)

