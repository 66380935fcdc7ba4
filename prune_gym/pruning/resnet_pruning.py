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

:func:`inference_form` is how to run either network fast on a CPU: BatchNorms folded into the
convolutions, a pruned network's channel counts zero-padded up to multiples of 8 (exact: the
padded channels carry zeros), channels last. The extracted widths are whatever the masks kept
(11, 13, 15, ...), and oneDNN's channels-last kernels run such counts slower than the next
multiple of 8, so without padding the pruned network was no faster than the unpruned one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from prune_gym.models.resnet_cifar import CifarResNet, conv_bn_pairs, conv_groups
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
    zero. ``width`` is the output's channel count.

    Runs as one gather and one multiply (every output channel reads some input channel, the ones
    with no source are multiplied by zero): no shape taken from the input, so the module traces
    for any batch size (``torch.jit.trace``), and no zero-filled tensor is written then scattered.
    """

    def __init__(self, src: torch.Tensor, dst: torch.Tensor, scale: torch.Tensor, width: int, stride: int):
        super().__init__()
        self.register_buffer("src", src)
        self.register_buffer("dst", dst)
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.width, self.stride = width, stride
        self._gather_plan()

    def _gather_plan(self) -> None:
        gather = torch.zeros(self.width, dtype=torch.int64, device=self.src.device)
        gather[self.dst] = self.src
        scale = torch.zeros(self.width, dtype=self.scale.dtype, device=self.scale.device)
        scale[self.dst] = self.scale.flatten()
        self.register_buffer("gather", gather, persistent=False)
        self.register_buffer("gather_scale", scale.view(1, -1, 1, 1), persistent=False)

    def widened(self, width: int) -> ChannelMapShortcut:
        """The same map into ``width ≥ self.width`` output channels (the extra ones zero)."""
        if width < self.width:
            raise ValueError(f"Cannot narrow a shortcut from {self.width} to {width} channels.")
        return ChannelMapShortcut(self.src, self.dst, self.scale.flatten(), width, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        picked = x[:, :, ::self.stride, ::self.stride]
        return picked.index_select(1, self.gather) * self.gather_scale


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


def rounded_count(count: int, width: int, multiple: int) -> int:
    """``count`` of ``width`` channels rounded to the nearest multiple of ``multiple`` (halves
    up), at least one multiple and at most ``width`` (a layer narrower than ``multiple`` keeps
    all its channels)."""
    if multiple <= 1:
        return count
    if width <= multiple:
        return width
    return min(width, max(multiple, multiple * math.floor(count / multiple + 0.5)))


def group_members(network: CifarResNet) -> dict[tuple[str, int], list[int]]:
    """The convolutions (forward-order indices) that must keep the same channels, per group:
    ``("stage", s)`` for the convolutions tied by stage ``s``'s residual additions
    (:func:`conv_groups`), ``("free", i)`` for a block's first convolution ``i`` alone."""
    members: dict[tuple[str, int], list[int]] = {}
    for index, group in enumerate(conv_groups(network)):
        members.setdefault(("free", index) if group is None else ("stage", group), []).append(index)
    return members


def kept_per_convolution(network: CifarResNet, masks: Sequence[torch.Tensor], round_to: int = 1) -> list[torch.Tensor]:
    """Per convolution (forward order) the indices of the output channels kept. ``round_to`` 1:
    the channels whose mask is above zero (:func:`kept_channels`). Above 1: per group of tied
    convolutions (:func:`conv_groups`; a block's first convolution is its own group) the count is
    :func:`rounded_count`'s, filled by the group's summed mask value, largest first; rounding down
    drops the smallest values, rounding up adds zero-mask channels by their BatchNorms' summed
    ``|γ|`` (network slimming's score), and their zero mask folds them in as channels that output
    zero until fine-tuning trains them."""
    if round_to < 1:
        raise ValueError(f"round_to must be ≥ 1, got {round_to}.")
    if round_to == 1:
        return [kept_channels(mask) for mask in masks]
    norms = [norm for _, norm in conv_bn_pairs(network)]
    kept: list[torch.Tensor] = [torch.empty(0)] * len(masks)
    for indices in group_members(network).values():
        value = sum(masks[index].detach().double().cpu() for index in indices)
        slimming = sum(norms[index].weight.detach().abs().double().cpu() for index in indices)
        width = len(value)
        count = rounded_count(max(1, int((value > 0).sum())), width, round_to)
        order = sorted(range(width), key=lambda channel: (-float(value[channel]), -float(slimming[channel])))
        chosen = torch.tensor(sorted(order[:count]), dtype=torch.int64, device=masks[indices[0]].device)
        for index in indices:
            kept[index] = chosen
    return kept


@torch.no_grad()
def extract_resnet(network: CifarResNet, masks: Sequence[torch.Tensor], round_to: int = 1) -> PrunedResNet:
    """The smaller dense network of ``network`` under ``masks`` (one per convolution, module docstring).

    Convolutions tied by a residual addition must keep the same channels (their masks' zeros
    agree); their values may differ, each is folded into its own BatchNorm. ``round_to`` > 1
    rounds every kept channel count to the nearest multiple (:func:`kept_per_convolution`), the
    counts oneDNN's CPU kernels run fastest; 1 (the default) keeps exactly the masks' channels.

    Raises:
        ValueError: the wrong number of masks, or tied layers keeping different channels.
    """
    expected = 1 + 2 * len(network.blocks)
    if len(masks) != expected:
        raise ValueError(f"Need one mask per convolution ({expected} for this network), got {len(masks)}.")
    masks = [mask.detach() for mask in masks]
    kept = kept_per_convolution(network, masks, round_to)
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
# The inference form: BatchNorms folded, channel counts the CPU kernels run fast
# ----------------------------------------------------------------------------------------------


def _conv_norm_owners(network: CifarResNet | PrunedResNet) -> list[tuple[nn.Module, str, str]]:
    """(module, conv attribute, BatchNorm attribute) of every convolution in forward order; the
    same names in a :class:`CifarResNet` and a :class:`PrunedResNet`."""
    owners: list[tuple[nn.Module, str, str]] = [(network, "conv1", "bn1")]
    for block in network.blocks:
        owners += [(block, "conv1", "bn1"), (block, "conv2", "bn2")]
    return owners


@torch.no_grad()
def fold_batchnorms(network: CifarResNet | PrunedResNet) -> CifarResNet | PrunedResNet:
    """A copy of ``network`` in evaluation mode with every BatchNorm folded into the convolution
    before it (torch's ``fuse_conv_bn_eval``; the BatchNorms become ``nn.Identity``). Outputs
    equal the original's in evaluation mode up to float rounding; a BatchNorm costs a pass over
    the feature map at inference, 19 of them in ResNet-20."""
    folded = copy.deepcopy(network).eval()
    for owner, conv, norm in _conv_norm_owners(folded):
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, norm)))
        setattr(owner, norm, nn.Identity())
    return folded


def _zero_padded_conv(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    padded = nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    padded = padded.to(conv.weight.device, conv.weight.dtype)
    padded.weight.zero_()
    padded.bias.zero_()
    padded.weight[:conv.out_channels, :conv.in_channels] = conv.weight
    if conv.bias is not None:
        padded.bias[:conv.out_channels] = conv.bias
    return padded


@torch.no_grad()
def pad_channels(network: PrunedResNet, multiple: int) -> PrunedResNet:
    """A copy of a BatchNorm-folded pruned network (:func:`fold_batchnorms`) whose every channel
    count is rounded up to a multiple of ``multiple`` with zero channels: zero weights and bias,
    so they carry zeros through every ReLU, residual addition and shortcut, and the logits equal
    the unpadded network's. Why: oneDNN's channels-last convolutions are fastest on channel counts
    that fill its vector blocks: on an AVX2 core a 15-channel 3×3 convolution at 32×32 took
    259–297 µs at batch 1 and the 16-channel one 136–182 µs (``benchmarks/conv_widths.py``;
    ``benchmarks/maskoffset_latency.py`` times whole networks). The padded network costs more
    MACs; count them on the result.

    Raises:
        ValueError: ``multiple`` below 1, or BatchNorms not folded (a zero channel through a
            BatchNorm would come out as its shift, not zero).
    """
    if multiple < 1:
        raise ValueError(f"multiple must be ≥ 1, got {multiple}.")
    if any(not isinstance(getattr(owner, norm), nn.Identity) for owner, _, norm in _conv_norm_owners(network)):
        raise ValueError("pad_channels needs a BatchNorm-folded network: call fold_batchnorms first.")
    padded = copy.deepcopy(network)
    stream = _round_up(padded.conv1.out_channels, multiple)
    padded.conv1 = _zero_padded_conv(padded.conv1, padded.conv1.in_channels, stream)
    for block in padded.blocks:
        hidden = _round_up(block.conv1.out_channels, multiple)
        out = _round_up(block.conv2.out_channels, multiple)
        block.conv1 = _zero_padded_conv(block.conv1, stream, hidden)
        block.conv2 = _zero_padded_conv(block.conv2, hidden, out)
        if block.shortcut is not None:
            block.shortcut = block.shortcut.widened(out)
        stream = out
    linear = nn.Linear(stream, padded.linear.out_features).to(padded.linear.weight.device)
    linear.weight.zero_()
    linear.weight[:, :padded.linear.in_features] = padded.linear.weight
    linear.bias.copy_(padded.linear.bias)
    padded.linear = linear
    return padded.eval()


def _round_up(count: int, multiple: int) -> int:
    return -(-count // multiple) * multiple


def inference_form(network: CifarResNet | PrunedResNet, round_to: int = 8) -> CifarResNet | PrunedResNet:
    """How to run a ResNet of this module for speed on a CPU: BatchNorms folded, a pruned
    network's channel counts zero-padded to multiples of ``round_to`` (1: not padded), channels
    last, evaluation mode. Same logits as ``network.eval()`` up to float rounding (tested)."""
    form = fold_batchnorms(network)
    if isinstance(form, PrunedResNet) and round_to > 1:
        form = pad_channels(form, round_to)
    return form.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------
# Static pruning: channel scores → binary masks at a MAC budget
# ----------------------------------------------------------------------------------------------


def _group_scores(network: CifarResNet, scores: Sequence[torch.Tensor]) -> dict[tuple[str, int], torch.Tensor]:
    """Per group of :func:`group_members` the sum of its convolutions' channel scores, in forward order."""
    return {key: sum(scores[index].double().cpu() for index in indices)
            for key, indices in group_members(network).items()}


def _masks_from_counts(network: CifarResNet, combined: dict[tuple[str, int], torch.Tensor],
                       counts: dict[tuple[str, int], int]) -> list[torch.Tensor]:
    """Binary masks keeping each group's ``counts[key]`` highest-scoring channels."""
    device = network.conv1.weight.device
    masks: list[torch.Tensor] = [torch.empty(0)] * len(conv_groups(network))
    for key, indices in group_members(network).items():
        mask = torch.zeros(len(combined[key]))
        mask[torch.topk(combined[key], counts[key]).indices] = 1.0
        for index in indices:
            masks[index] = mask.to(device)
    return masks


def static_masks(network: CifarResNet, scores: Sequence[torch.Tensor], keep_fraction: float,
                 round_to: int = 1) -> list[torch.Tensor]:
    """Binary masks that keep ``ceil(keep_fraction · channels)`` (at least one; with ``round_to``
    > 1 that count rounded by :func:`rounded_count`) channels of every group with the highest
    scores. Channels tied by residual additions (:func:`conv_groups`) are one group, scored by the
    sum of the tied layers' scores; a block's first convolution is a group of its own."""
    combined = _group_scores(network, scores)
    return _masks_from_counts(network, combined, _uniform_counts(combined, keep_fraction, round_to))


def _uniform_counts(combined: dict[tuple[str, int], torch.Tensor], keep_fraction: float,
                    round_to: int) -> dict[tuple[str, int], int]:
    """Per group, ``ceil(keep_fraction · channels)`` (at least one), rounded by :func:`rounded_count`."""
    return {key: rounded_count(max(1, math.ceil(keep_fraction * len(score) - 1e-9)), len(score), round_to)
            for key, score in combined.items()}


def masks_for_macs(network: CifarResNet, scores: Sequence[torch.Tensor], target_macs: float,
                   image_shape: Sequence[int], round_to: int = 1) -> tuple[list[torch.Tensor], int]:
    """The :func:`static_masks` with the largest uniform keep fraction whose pruned network costs
    at most ``target_macs`` MACs per image (bisection, counted by the project's one counter);
    returns the masks and their MACs.

    The uniform fraction moves in stairs, so the largest one under the budget can sit far below
    it: with ``round_to`` 8 (a 16-channel group keeps 8 or 16) at a 0.72 target, 0.45 of the MACs
    on ResNet-20; even with ``round_to`` 1, one channel of the 16-channel residual stream costs
    every stage-1 convolution a sixteenth, and a 0.814 target got 0.767. The counts are then raised
    ``round_to`` channels at a time, the group with the smallest fraction kept first, while the
    network stays within the budget (:func:`_fill_to_budget`), so a static criterion competes at
    the FLOPs it is compared at."""
    combined = _group_scores(network, scores)

    def macs_of(masks: list[torch.Tensor]) -> int:
        return count_macs(extract_resnet(network, masks), image_shape)

    def uniform(fraction: float) -> list[torch.Tensor]:
        return _masks_from_counts(network, combined, _uniform_counts(combined, fraction, round_to))

    low, high = 0.0, 1.0
    masks = uniform(low)
    best = (masks, macs_of(masks))
    for _ in range(16):
        middle = (low + high) / 2
        masks = uniform(middle)
        macs = macs_of(masks)
        if macs <= target_macs:
            low, best = middle, (masks, macs)
        else:
            high = middle
    return _fill_to_budget(network, combined, best, target_macs, macs_of, round_to)


def _fill_to_budget(network: CifarResNet, combined: dict[tuple[str, int], torch.Tensor],
                    start: tuple[list[torch.Tensor], int], target_macs: float,
                    macs_of: Callable[[list[torch.Tensor]], int], step: int) -> tuple[list[torch.Tensor], int]:
    """Raise group counts by ``step`` channels, the group with the smallest fraction kept first
    (ties in forward order), while the MACs stay ≤ ``target_macs``."""
    members = group_members(network)
    counts = {key: int(start[0][members[key][0]].sum()) for key in combined}
    best = start
    while True:
        order = sorted((counts[key] / len(score), position, key)
                       for position, (key, score) in enumerate(combined.items()) if counts[key] < len(score))
        for _, _, key in order:
            trial = {**counts, key: min(len(combined[key]), counts[key] + step)}
            masks = _masks_from_counts(network, combined, trial)
            macs = macs_of(masks)
            if macs <= target_macs:
                counts, best = trial, (masks, macs)
                break
        else:
            return best
