"""Real channel removal for CIFAR ResNets: per-convolution masks → a smaller dense network.

:func:`extract_resnet` turns a :class:`~prune_gym.models.resnet_cifar.CifarResNet` and one mask
per convolution (forward order: stem, then each block's conv1 and conv2; values ≥ 0, a zero is a
pruned channel) into a :class:`PrunedResNet`: pruned ``Conv2d``s and ``BatchNorm2d``s, the
mask values folded into the BatchNorms' affine parameters (exact: ``m·(γ·x̂ + β) = (mγ)·x̂ + mβ``),
the shortcut bookkeeping, and nothing else. In evaluation mode its outputs equal those of the
network with the masks applied after each BatchNorm (:class:`~prune_gym.models.mask_offset.MaskedResNet`).
Binary masks (1 = kept) give the static criteria's pruned networks through the same function.

Why by hand and not with ``torch-pruning``: its dependency graph follows modules and traced
tensor operations, but the zero-padding (option A) shortcut moves stage ``s``'s channel ``c`` to
channel ``c + planes/4`` of stage ``s+1`` through ``F.pad`` on the channel axis, a mapping the
graph does not model; every residual stream of these networks runs through such a shortcut.
(Checked with torch-pruning 1.6.1: pruning stem channels 0 and 1 of ResNet-20 through
``DependencyGraph.get_pruning_group`` also pruned channels 0 and 1 of every stage-2 and stage-3
conv2, and the pruned network's forward pass failed with a shape mismatch at the linear layer.) The
shortcut here keeps index lists instead: it scatters the kept channels of the previous stream to
their padded positions and gathers the kept channels of the new stream (:class:`ChannelMapShortcut`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prune_gym.models.resnet_cifar import CifarResNet, conv_groups
from prune_gym.pruning.counting import count_macs


def kept_channels(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the channels a mask keeps (value > 0); at least one (a layer of zero channels
    is not a convolution — the channel kept outputs zeros, so outputs do not change)."""
    kept = torch.nonzero(mask > 0).flatten()
    return kept if len(kept) else torch.zeros(1, dtype=torch.int64, device=mask.device)


def _pruned_conv(conv: nn.Conv2d, inputs: torch.Tensor, outputs: torch.Tensor) -> nn.Conv2d:
    pruned = nn.Conv2d(len(inputs), len(outputs), conv.kernel_size, conv.stride, conv.padding, bias=False)
    pruned.weight.data.copy_(conv.weight.data[outputs][:, inputs])
    return pruned.to(conv.weight.device)


def _folded_norm(norm: nn.BatchNorm2d, outputs: torch.Tensor, mask: torch.Tensor) -> nn.BatchNorm2d:
    pruned = nn.BatchNorm2d(len(outputs), eps=norm.eps, momentum=norm.momentum).to(norm.weight.device)
    scale = mask[outputs].to(norm.weight.dtype)
    with torch.no_grad():
        pruned.weight.copy_(norm.weight[outputs] * scale)
        pruned.bias.copy_(norm.bias[outputs] * scale)
        pruned.running_mean.copy_(norm.running_mean[outputs])
        pruned.running_var.copy_(norm.running_var[outputs])
        pruned.num_batches_tracked.copy_(norm.num_batches_tracked)
    return pruned


class ChannelMapShortcut(nn.Module):
    """The zero-padding shortcut between pruned streams: output channel ``dst[i]`` is input
    channel ``src[i]`` (every ``stride``-th pixel) times ``scale[i]``; every other output channel is
    zero. ``width`` is the output's channel count."""

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, scale: torch.Tensor, width: int, stride: int):
        super().__init__()
        self.register_buffer("src", src)
        self.register_buffer("dst", dst)
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.width, self.stride = width, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        picked = x[:, self.src, ::self.stride, ::self.stride] * self.scale
        out = picked.new_zeros(x.shape[0], self.width, *picked.shape[2:])
        out[:, self.dst] = picked
        return out


class PrunedBlock(nn.Module):
    def __init__(self, conv1: nn.Conv2d, bn1: nn.BatchNorm2d, conv2: nn.Conv2d, bn2: nn.BatchNorm2d,
                 shortcut: nn.Module | None):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2, self.shortcut = conv1, bn1, conv2, bn2, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + (x if self.shortcut is None else self.shortcut(x)))


class PrunedResNet(nn.Module):
    """A pruned CIFAR ResNet: dense, smaller, no masks (module docstring).

    Attributes:
        kept: per convolution (forward order) the original indices of the output channels kept.
    """

    def __init__(self, conv1: nn.Conv2d, bn1: nn.BatchNorm2d, blocks: Sequence[PrunedBlock], linear: nn.Linear,
                 kept: list[torch.Tensor]):
        super().__init__()
        self.conv1, self.bn1, self.blocks, self.linear = conv1, bn1, nn.ModuleList(blocks), linear
        self.kept = kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for block in self.blocks:
            out = block(out)
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@torch.no_grad()
def extract_resnet(network: CifarResNet, masks: Sequence[torch.Tensor]) -> PrunedResNet:
    """The smaller dense network of ``network`` under ``masks`` (one per convolution, module docstring).

    Convolutions tied by a residual addition must keep the same channels (their masks' zeros
    agree); their values may differ, each is folded into its own BatchNorm.

    Raises:
        ValueError: the wrong number of masks, or tied layers keeping different channels.
    """
    expected = 1 + 2 * len(network.blocks)
    if len(masks) != expected:
        raise ValueError(f"Need one mask per convolution ({expected} for this network), got {len(masks)}.")
    masks = [mask.detach() for mask in masks]
    kept = [kept_channels(mask) for mask in masks]
    stream = kept[0]
    conv1 = _pruned_conv(network.conv1, torch.arange(network.conv1.in_channels), stream)
    bn1 = _folded_norm(network.bn1, stream, masks[0])
    blocks = []
    for number, block in enumerate(network.blocks):
        hidden, out = kept[1 + 2 * number], kept[2 + 2 * number]
        shortcut = None
        if block.downsample:
            shortcut = _padded_map(stream, out, masks[2 + 2 * number], block.conv1.in_channels,
                                   block.conv2.out_channels)
        elif not torch.equal(stream, out):
            raise ValueError(f"Block {number}'s output keeps other channels than its input stream, but an identity "
                             "shortcut adds them: tied layers must keep the same channels.")
        blocks.append(PrunedBlock(_pruned_conv(block.conv1, stream, hidden),
                                  _folded_norm(block.bn1, hidden, masks[1 + 2 * number]),
                                  _pruned_conv(block.conv2, hidden, out),
                                  _folded_norm(block.bn2, out, masks[2 + 2 * number]), shortcut))
        stream = out
    linear = nn.Linear(len(stream), network.linear.out_features).to(network.linear.weight.device)
    linear.weight.data.copy_(network.linear.weight.data[:, stream])
    linear.bias.data.copy_(network.linear.bias.data)
    return PrunedResNet(conv1, bn1, blocks, linear, kept).eval()


def _padded_map(previous: torch.Tensor, out: torch.Tensor, mask: torch.Tensor, in_width: int,
                out_width: int) -> ChannelMapShortcut:
    """Option A between pruned streams: original channel ``c`` of the previous stream lands on
    ``c + pad``; keep the pairs whose both ends are kept, scaled by the new stream's mask."""
    pad = (out_width - in_width) // 2
    position_in = {int(channel): index for index, channel in enumerate(previous)}
    pairs = [(position_in[int(channel) - pad], index, int(channel)) for index, channel in enumerate(out)
             if int(channel) - pad in position_in]
    device = mask.device
    src = torch.tensor([p[0] for p in pairs], dtype=torch.int64, device=device)
    dst = torch.tensor([p[1] for p in pairs], dtype=torch.int64, device=device)
    scale = mask[torch.tensor([p[2] for p in pairs], dtype=torch.int64, device=device)].float()
    return ChannelMapShortcut(src, dst, scale, len(out), 2)


# ----------------------------------------------------------------------------------------------
# Static pruning: channel scores → binary masks at a MAC budget
# ----------------------------------------------------------------------------------------------


def static_masks(network: CifarResNet, scores: Sequence[torch.Tensor], keep_fraction: float) -> list[torch.Tensor]:
    """Binary masks that keep ``ceil(keep_fraction · channels)`` (at least one) channels of every
    group with the highest scores. Channels tied by residual additions (:func:`conv_groups`) are
    one group, scored by the sum of the tied layers' scores; a block's first convolution is a
    group of its own."""
    groups = conv_groups(network)
    combined: dict[object, torch.Tensor] = {}
    for index, (group, score) in enumerate(zip(groups, scores)):
        key = ("free", index) if group is None else ("stage", group)
        combined[key] = combined.get(key, 0) + score.double().cpu()
    kept: dict[object, torch.Tensor] = {}
    for key, score in combined.items():
        count = max(1, math.ceil(keep_fraction * len(score) - 1e-9))
        mask = torch.zeros(len(score))
        mask[torch.topk(score, count).indices] = 1.0
        kept[key] = mask
    device = network.conv1.weight.device
    return [kept[("free", index) if group is None else ("stage", group)].to(device)
            for index, group in enumerate(groups)]


def masks_for_macs(network: CifarResNet, scores: Sequence[torch.Tensor], target_macs: float,
                   image_shape: Sequence[int]) -> tuple[list[torch.Tensor], int]:
    """The :func:`static_masks` with the largest uniform keep fraction whose pruned network costs
    at most ``target_macs`` MACs per image (bisection, counted by the project's one counter);
    returns the masks and their MACs."""
    def macs_of(fraction: float) -> tuple[list[torch.Tensor], int]:
        masks = static_masks(network, scores, fraction)
        return masks, count_macs(extract_resnet(network, masks), image_shape)

    low, high = 0.0, 1.0
    best = macs_of(low)
    for _ in range(16):
        middle = (low + high) / 2
        masks, macs = macs_of(middle)
        if macs <= target_macs:
            low, best = middle, (masks, macs)
        else:
            high = middle
    return best
