"""Plain 3×3 CNN backbones whose every prefix of channel groups is a usable network.

Runtime Neural Pruning (RNP) decides, per image and per conv layer, to compute only the first
``g`` of ``k`` equal channel groups. For that to work the backbone must be good at *every* prefix
combination, not only at full width. Design (justification in :class:`GroupedCNN`):

* Layer ``l`` has ``C_l`` output channels split into ``k`` groups; "``g`` groups" means the first
  ``round(C_l · g / k)`` channels. The first conv always runs at full width (RNP's rule).
* One BatchNorm per (input groups, output groups) pair of a layer ("switchable" BN, as in
  Slimmable Networks, conditioned on both widths): a conv's output statistics depend on how many
  input channels it sums as much as on which outputs it keeps. With one BN per output width only,
  the 3/4-width network scored 36.8 % on the CIFAR-10 subset's test images and 55.3 % once its
  statistics were recomputed for that exact configuration (measured on this project's backbone).
  At inference every BN is folded into its conv, so the pairs cost nothing at run time.
* Training samples a fresh per-layer group count per batch (sandwich rule: full, narrowest and
  random per-layer mixes, with in-place distillation from the full width).

The grouped execution helper :func:`run_grouped` is the one place where a batch whose samples
chose different widths is split into sliced convolutions, one per (input, output) group pair
present (at most ``k`` for the first decided layer, whose input is always full, and ``k²`` after);
training, fine-tuning and inference (:mod:`prune_gym.pruning.runtime`) all go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture of a plain CNN: output channels of each 3×3 conv and where a 2×2 max-pool follows."""

    name: str
    widths: tuple[int, ...]
    pool_after: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.pool_after) or len(self.widths) < 2:
            raise ValueError(f"{self.name}: need ≥2 layers and one pool flag per layer.")


# Channel counts double where the resolution halves, so every decided layer costs about the same
# (~4.7 M MACs per image on 32×32 inputs); cnn4 is 15.0 M MACs per image, cheap enough to pretrain
# and run thousands of episodes per second on two CPU cores.
BACKBONES: dict[str, BackboneSpec] = {
    "cnn4": BackboneSpec("cnn4", (32, 64, 128, 256), (True, True, True, False)),
    "cnn6": BackboneSpec("cnn6", (32, 64, 64, 128, 128, 256), (True, False, True, False, True, False)),
    "cnn8": BackboneSpec(
        "cnn8", (32, 64, 64, 128, 128, 256, 256, 256), (True, False, True, False, True, False, False, False)
    ),
}


# Widest "-w" factor accepted: 4× the channels is 16× the MACs (cnn8-w4 would be ~1.3 G per image),
# well past anything the package pretrains on a CPU; a larger number is more likely a typo ("w13").
MAX_WIDTH_FACTOR = 4.0


def get_backbone_spec(name: str) -> BackboneSpec:
    """The :data:`BACKBONES` entry called ``name``, or ``"<entry>-w<factor>"`` for that entry with
    every layer's channels multiplied by ``factor`` in (0, 4] and rounded: below 1 the narrow
    networks RNP is compared with, trained with fewer channels from the start (``"cnn4-w0.5"``);
    above 1 wider backbones (``"cnn4-w1.3"``: 25.1 M MACs per 32×32 image, near the seed report's
    4-conv net's 25.4 M, against cnn4's 15.0 M)."""
    base, separator, factor_text = name.partition("-w")
    if base not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; expected one of {sorted(BACKBONES)}, optionally with a "
                         "width factor such as 'cnn4-w0.5'.")
    if not separator:
        return BACKBONES[base]
    try:
        factor = float(factor_text)
    except ValueError:
        factor = -1.0
    if not 0.0 < factor <= MAX_WIDTH_FACTOR:
        raise ValueError(f"Backbone {name!r}: the width factor after '-w' must be a number in "
                         f"(0, {MAX_WIDTH_FACTOR:g}].")
    spec = BACKBONES[base]
    return BackboneSpec(name, tuple(max(1, round(width * factor)) for width in spec.widths), spec.pool_after)


def prefix_widths(channels: int, k: int) -> list[int]:
    """Channels kept by the first 1..k of k (near-)equal groups of a ``channels``-wide layer."""
    return [round(channels * groups / k) for groups in range(1, k + 1)]


GroupChoice = int | np.ndarray  # one group count for the whole batch, or one per sample (int64, 1..k)


def run_grouped(
    inputs: torch.Tensor,
    in_widths: np.ndarray,
    groups: GroupChoice,
    compute: Callable[[torch.Tensor, int], torch.Tensor],
) -> torch.Tensor:
    """Apply ``compute(x, g)`` to every subset of samples sharing an input width and a group count ``g``.

    Each subset runs as one sliced convolution, whatever the batch size, and sees exactly the
    input channels its samples have; the output is zero-padded to the widest computed width, so
    skipped channels are exact zeros that cost nothing downstream. Bookkeeping is numpy: per-sample
    widths and choices are tiny arrays, where a numpy operation costs far less than a torch one.

    Args:
        inputs: N×C×H×W activations of the previous layer.
        in_widths: int64 (N,), active input channels of each sample.
        groups: group count for all samples, or int64 (N,) per sample.
        compute: ``(x_subset, g) -> y_subset``, the layer at ``g`` groups.
    """
    if not isinstance(groups, np.ndarray):
        groups = np.full(len(in_widths), int(groups), dtype=np.int64)
    if (groups == groups[0]).all() and (in_widths == in_widths[0]).all():
        return compute(inputs[:, : int(in_widths[0])], int(groups[0]))
    # One sliced conv per (input width, output groups) pair present: each pair has its own BN.
    pair_keys = in_widths * (int(groups.max()) + 1) + groups
    parts = []
    for key in np.unique(pair_keys).tolist():
        rows = np.flatnonzero(pair_keys == key)
        index = torch.from_numpy(rows).to(inputs.device)
        parts.append((index, compute(inputs[index, : int(in_widths[rows[0]])], int(groups[rows[0]]))))
    widest = max(part.shape[1] for _, part in parts)
    reference = parts[-1][1]
    layout = (torch.channels_last if reference.dim() == 4 and reference.is_contiguous(memory_format=torch.channels_last)
              else torch.contiguous_format)
    output = torch.empty((inputs.shape[0], widest, *reference.shape[2:]), dtype=reference.dtype,
                         device=reference.device, memory_format=layout).zero_()
    for index, part in parts:
        output[index, : part.shape[1]] = part
    return output


class GroupedCNN(nn.Module):
    """Plain CNN (3×3 conv → BN → 2×2 max-pool where set → ReLU → dropout) with a linear head on
    globally average-pooled features, executable at any per-layer prefix of ``k`` channel groups.

    Why pair-conditioned BN and sandwich training: a conv whose input has only a prefix of
    channels produces activations with other statistics; a single BN would normalise them with
    full-width statistics and the narrow network collapses. With one BN per (input groups,
    output groups) pair, trained on random per-layer mixes, the statistics of every one of the
    ``k^(L-1)`` configurations are (to first order) the ones its BNs were trained with.
    Max-pool is applied before the ReLU (they commute) because pooling first moves 4× less memory.

    Args:
        spec: the architecture (see :data:`BACKBONES`).
        in_channels: image channels (3 for CIFAR, 1 for MNIST).
        num_classes: classifier outputs.
        k: channel groups per layer; must not exceed the narrowest layer.
        dropout: dropout probability after every layer (0 disables it).
    """

    def __init__(self, spec: BackboneSpec, in_channels: int, num_classes: int, k: int = 4, dropout: float = 0.0):
        super().__init__()
        narrowest = min(spec.widths)
        if not 1 <= k <= narrowest:
            raise ValueError(
                f"k={k} channel groups do not fit backbone {spec.name!r}: its narrowest layer has "
                f"{narrowest} channels, so k must lie in 1..{narrowest}."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}.")
        self.spec, self.k, self.in_channels, self.num_classes = spec, k, in_channels, num_classes
        self.dropout_p = dropout
        channels_in = (in_channels, *spec.widths[:-1])
        self.convs = nn.ModuleList(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
                                   for c_in, c_out in zip(channels_in, spec.widths))
        self.group_widths = [[spec.widths[0]]] + [prefix_widths(width, k) for width in spec.widths[1:]]
        # Layer 0 is always full: its table maps every "group count" to the full width.
        self.width_tables = [np.array(widths * k if layer == 0 else widths, dtype=np.int64)
                             for layer, widths in enumerate(self.group_widths)]
        # BN of layer l for (g_in, g_out) is norms[l][norm_index(l, g_in, g_out)]: layer 0 has one,
        # layer 1 (input always full) one per output width, later layers one per pair.
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm2d(widths[g_out - 1]) for _ in self._input_group_options(layer)
                          for g_out in range(1, len(widths) + 1))
            for layer, widths in enumerate(self.group_widths))
        self.head = nn.Linear(spec.widths[-1], num_classes)
        self.dropout = nn.Dropout(dropout)

    def _input_group_options(self, layer: int) -> range:
        """Input group counts a layer can see: only "full" for layers 0 and 1, else 1..k."""
        return range(1, self.k + 1) if layer >= 2 else range(1, 2)

    def input_groups(self, layer: int, width_in: int) -> int:
        """Group count (1..k) of layer ``layer - 1`` that produced ``width_in`` channels (1 for layers 0, 1)."""
        if layer < 2:
            return 1
        return self.group_widths[layer - 1].index(width_in) + 1

    def norm_index(self, layer: int, groups_in: int, groups_out: int) -> int:
        """Position in ``norms[layer]`` of the BN for ``groups_in`` → ``groups_out`` (layer 0: 0)."""
        if layer == 0:
            return 0
        return (groups_in - 1) * len(self.group_widths[layer]) + groups_out - 1

    @property
    def num_layers(self) -> int:
        return len(self.spec.widths)

    @property
    def num_decisions(self) -> int:
        """Layers whose width is chosen (all but the first)."""
        return self.num_layers - 1

    def layer_output(self, layer: int, x: torch.Tensor, groups: int) -> torch.Tensor:
        """Layer ``layer`` at ``groups`` groups (layer 0 ignores ``groups``) on inputs ``x``, whose
        channel count must be one of the previous layer's prefix widths."""
        groups = 1 if layer == 0 else groups
        width_out = self.group_widths[layer][groups - 1]
        weight = self.convs[layer].weight[:width_out, : x.shape[1]]
        norm = self.norms[layer][self.norm_index(layer, self.input_groups(layer, x.shape[1]), groups)]
        y = norm(F.conv2d(x, weight, padding=1))
        if self.spec.pool_after[layer]:
            y = F.max_pool2d(y, 2)
        return self.dropout(F.relu(y))

    def forward(self, x: torch.Tensor, groups: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Logits for normalised images ``x`` at the given widths.

        Args:
            groups: ``None`` (full width), one count for every decided layer, one count per decided
                layer (length ``L-1``), or an N×(L-1) array or tensor of per-sample counts in 1..k.
        """
        per_layer = self._groups_per_layer(groups, x.shape[0])
        h = self.layer_output(0, x, self.k)
        in_widths = np.full(x.shape[0], h.shape[1], dtype=np.int64)
        for layer in range(1, self.num_layers):
            choice = per_layer[layer - 1]
            h = run_grouped(h, in_widths, choice, lambda xs, g, layer=layer: self.layer_output(layer, xs, g))
            in_widths = self.widths_of(layer, choice, x.shape[0])
        return self.head_logits(h)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Classifier on globally average-pooled features; a narrower input uses the matching weight columns."""
        return F.linear(features.mean(dim=(2, 3)), self.head.weight[:, : features.shape[1]], self.head.bias)

    @torch.no_grad()
    def to_dense(self, groups: int | Sequence[int] | None = None) -> nn.Sequential:
        """A smaller dense copy keeping the first ``groups`` groups of every decided layer (real
        channel removal, same outputs as ``forward(x, groups)`` in eval mode). ``None`` = full width."""
        per_layer = [1] + [int(g) for g in self._groups_per_layer(groups, 1)]
        modules: list[nn.Module] = []
        width_in = self.in_channels
        for layer, group_count in enumerate(per_layer):
            width_out = self.group_widths[layer][group_count - 1]
            conv = nn.Conv2d(width_in, width_out, 3, padding=1, bias=False)
            conv.weight.copy_(self.convs[layer].weight[:width_out, :width_in])
            norm = nn.BatchNorm2d(width_out)
            norm_index = self.norm_index(layer, self.input_groups(layer, width_in), group_count)
            norm.load_state_dict(self.norms[layer][norm_index].state_dict())
            modules += [conv, norm] + ([nn.MaxPool2d(2)] if self.spec.pool_after[layer] else []) + [nn.ReLU()]
            if self.dropout_p:
                modules.append(nn.Dropout(self.dropout_p))
            width_in = width_out
        head = nn.Linear(width_in, self.num_classes)
        head.weight.copy_(self.head.weight[:, :width_in])
        head.bias.copy_(self.head.bias)
        modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), head]
        dense = nn.Sequential(*modules).to(self.head.weight.device)
        return dense.train(self.training)

    def widths_of(self, layer: int, choice: GroupChoice, count: int) -> np.ndarray:
        """Active output channels (int64, per sample) of ``layer`` at group choice ``choice``."""
        table = self.width_tables[layer]
        return table[choice - 1] if isinstance(choice, np.ndarray) else np.full(count, table[choice - 1])

    def _groups_per_layer(self, groups, batch: int) -> list[GroupChoice]:
        decisions = self.num_decisions
        if groups is None:
            return [self.k] * decisions
        if isinstance(groups, int):
            groups = [groups] * decisions
        if isinstance(groups, torch.Tensor):
            groups = groups.cpu().numpy()
        if isinstance(groups, np.ndarray):
            if groups.shape != (batch, decisions):
                raise ValueError(f"per-sample groups must have shape ({batch}, {decisions}), got {groups.shape}")
            if groups.size and (int(groups.min()) < 1 or int(groups.max()) > self.k):
                raise ValueError(f"group counts must lie in 1..{self.k}")
            groups = groups.astype(np.int64)
            return [groups[:, i] for i in range(decisions)]
        groups = list(groups)
        if len(groups) != decisions or any(not 1 <= int(g) <= self.k for g in groups):
            raise ValueError(f"expected {decisions} group counts in 1..{self.k}, got {groups}")
        return [int(g) for g in groups]
