"""Plain 3×3 CNN backbones whose every prefix of channel groups is a usable network.

Runtime Neural Pruning (RNP) decides, per image and per conv layer, to compute only the first
``g`` of ``k`` equal channel groups. For that to work the backbone must be good at *every* prefix
combination, not only at full width. Design (justification in :class:`GroupedCNN`):

* Layer ``l`` has ``C_l`` output channels split into ``k`` groups; "``g`` groups" means the first
  ``round(C_l · g / k)`` channels. The first conv always runs at full width (RNP's rule).
* One BatchNorm per output width ("switchable" BN, as in Slimmable Networks): a prefix of channels
  has different statistics from the full layer, so sharing one BN breaks narrow widths.
* Training samples a fresh per-layer group count per batch (sandwich rule: full, narrowest and
  random per-layer mixes, with in-place distillation from the full width), so the per-width BN
  statistics are averaged over exactly the mixtures of input widths an agent will produce.

The grouped execution helper :func:`run_grouped` is the one place where a batch whose samples
chose different widths is split into at most ``k`` sliced convolutions; training, fine-tuning and
inference (:mod:`prune_gym.pruning.runtime`) all go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


def get_backbone_spec(name: str) -> BackboneSpec:
    """The :data:`BACKBONES` entry called ``name``, with a clear error listing the valid names."""
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; expected one of {sorted(BACKBONES)}.")
    return BACKBONES[name]


def prefix_widths(channels: int, k: int) -> list[int]:
    """Channels kept by the first 1..k of k (near-)equal groups of a ``channels``-wide layer."""
    return [round(channels * groups / k) for groups in range(1, k + 1)]


GroupChoice = int | torch.Tensor  # one group count for the whole batch, or one per sample (int64, 1..k)


def run_grouped(
    inputs: torch.Tensor,
    in_widths: torch.Tensor,
    groups: GroupChoice,
    compute: Callable[[torch.Tensor, int], torch.Tensor],
) -> torch.Tensor:
    """Apply ``compute(x, g)`` to the samples that chose ``g`` groups, for every ``g`` present.

    Samples that chose the same count run as one sliced convolution: at most ``k`` calls per
    layer, whatever the batch size. Each call sees only the input channels its samples actually
    have (the widest of them); the output is zero-padded to the widest computed width, so skipped
    channels are exact zeros that cost nothing downstream.

    Args:
        inputs: N×C×H×W activations of the previous layer.
        in_widths: int64 (N,), active input channels of each sample.
        groups: group count for all samples (int) or per sample (int64 tensor of shape (N,)).
        compute: ``(x_subset, g) -> y_subset``, the layer at ``g`` groups.
    """
    if isinstance(groups, int):
        return compute(inputs[:, : int(in_widths.max())], groups)
    present = torch.unique(groups).tolist()
    if len(present) == 1:
        return compute(inputs[:, : int(in_widths.max())], present[0])
    parts = []
    for group_count in present:
        rows = (groups == group_count).nonzero().squeeze(1)
        parts.append((rows, compute(inputs[rows, : int(in_widths[rows].max())], group_count)))
    widest = max(part.shape[1] for _, part in parts)
    reference = parts[-1][1]
    layout = (torch.channels_last if reference.dim() == 4 and reference.is_contiguous(memory_format=torch.channels_last)
              else torch.contiguous_format)
    output = torch.empty((inputs.shape[0], widest, *reference.shape[2:]), dtype=reference.dtype,
                         device=reference.device, memory_format=layout).zero_()
    for rows, part in parts:
        output[rows, : part.shape[1]] = part
    return output


class GroupedCNN(nn.Module):
    """Plain CNN (3×3 conv → BN → 2×2 max-pool where set → ReLU → dropout) with a linear head on
    globally average-pooled features, executable at any per-layer prefix of ``k`` channel groups.

    Why switchable BN and sandwich training: a conv whose input has only a prefix of channels
    produces activations with smaller variance; a single BN would normalise them with full-width
    statistics and the narrow network collapses. With one BN per output width, trained on random
    per-layer mixes, every one of the ``k^(L-1)`` configurations is a network the BN has seen.
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
        # Layer 0 always runs in full and has one BN; later layers have one BN per prefix width.
        self.group_widths = [[spec.widths[0]]] + [prefix_widths(width, k) for width in spec.widths[1:]]
        self.norms = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(width) for width in widths)
                                   for widths in self.group_widths)
        self.head = nn.Linear(spec.widths[-1], num_classes)
        self.dropout = nn.Dropout(dropout)

    @property
    def num_layers(self) -> int:
        return len(self.spec.widths)

    @property
    def num_decisions(self) -> int:
        """Layers whose width is chosen (all but the first)."""
        return self.num_layers - 1

    def layer_output(self, layer: int, x: torch.Tensor, groups: int) -> torch.Tensor:
        """Layer ``layer`` at ``groups`` groups (layer 0 ignores ``groups``) on inputs ``x``."""
        norm_index = 0 if layer == 0 else groups - 1
        width_out = self.group_widths[layer][norm_index]
        weight = self.convs[layer].weight[:width_out, : x.shape[1]]
        y = self.norms[layer][norm_index](F.conv2d(x, weight, padding=1))
        if self.spec.pool_after[layer]:
            y = F.max_pool2d(y, 2)
        return self.dropout(F.relu(y))

    def forward(self, x: torch.Tensor, groups: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Logits for normalised images ``x`` at the given widths.

        Args:
            groups: ``None`` (full width), one count for every decided layer, one count per decided
                layer (length ``L-1``), or an int64 N×(L-1) tensor of per-sample counts in 1..k.
        """
        per_layer = self._groups_per_layer(groups, x.shape[0])
        in_widths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        h = self.layer_output(0, x, self.k)
        in_widths = torch.full_like(in_widths, h.shape[1])
        for layer in range(1, self.num_layers):
            choice = per_layer[layer - 1]
            h = run_grouped(h, in_widths, choice, lambda xs, g, layer=layer: self.layer_output(layer, xs, g))
            in_widths = self._widths_of(layer, choice, in_widths)
        return self.head_logits(h)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Classifier on globally average-pooled features; a narrower input uses the matching weight columns."""
        return F.linear(features.mean(dim=(2, 3)), self.head.weight[:, : features.shape[1]], self.head.bias)

    @torch.no_grad()
    def to_dense(self, groups: int | Sequence[int] | None = None) -> nn.Sequential:
        """A smaller dense copy keeping the first ``groups`` groups of every decided layer (real
        channel removal, same outputs as ``forward(x, groups)`` in eval mode). ``None`` = full width."""
        per_layer = [self.k] + [int(g) for g in self._groups_per_layer(groups, 1)]
        modules: list[nn.Module] = []
        width_in = self.in_channels
        for layer, group_count in enumerate(per_layer):
            norm_index = 0 if layer == 0 else group_count - 1
            width_out = self.group_widths[layer][norm_index]
            conv = nn.Conv2d(width_in, width_out, 3, padding=1, bias=False)
            conv.weight.copy_(self.convs[layer].weight[:width_out, :width_in])
            norm = nn.BatchNorm2d(width_out)
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

    def _widths_of(self, layer: int, choice: GroupChoice, like: torch.Tensor) -> torch.Tensor:
        table = torch.tensor(self.group_widths[layer], device=like.device)
        if isinstance(choice, int):
            return torch.full_like(like, int(table[choice - 1]))
        return table[choice - 1]

    def _groups_per_layer(self, groups, batch: int) -> list[GroupChoice]:
        decisions = self.num_decisions
        if groups is None:
            return [self.k] * decisions
        if isinstance(groups, int):
            groups = [groups] * decisions
        if isinstance(groups, torch.Tensor):
            if groups.shape != (batch, decisions):
                raise ValueError(f"per-sample groups must have shape ({batch}, {decisions}), got {tuple(groups.shape)}")
            if groups.numel() and (int(groups.min()) < 1 or int(groups.max()) > self.k):
                raise ValueError(f"group counts must lie in 1..{self.k}")
            return [groups[:, i] for i in range(decisions)]
        groups = list(groups)
        if len(groups) != decisions or any(not 1 <= int(g) <= self.k for g in groups):
            raise ValueError(f"expected {decisions} group counts in 1..{self.k}, got {groups}")
        return [int(g) for g in groups]
