"""CIFAR ResNets (He et al. 2016, §4.2): ResNet-20 and ResNet-56 with the zero-padding shortcut.

Three stages of ``n`` basic blocks at 16, 32 and 64 channels (``depth = 6n + 2``): a 3×3 stem
convolution, then per block ``conv3×3 → BN → ReLU → conv3×3 → BN``, added to the shortcut and
passed through a ReLU; global average pooling and one linear layer. The first block of stages 2
and 3 halves the resolution (stride 2) and doubles the channels; its shortcut is the paper's
**option A**: every second pixel of the input, zero-padded with ``planes // 4`` empty channels on
each side — no parameters, so the network has exactly the paper's 0.27 M (ResNet-20) and 0.85 M
(ResNet-56) weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# name → depth of the supported networks (depth = 6n + 2).
RESNET_DEPTHS = {"resnet20": 20, "resnet56": 56}
STAGE_WIDTHS = (16, 32, 64)


def check_resnet_name(name: str) -> int:
    """The depth of the CIFAR ResNet ``name``; a ``ValueError`` naming the supported ones otherwise."""
    if name not in RESNET_DEPTHS:
        raise ValueError(f"Unsupported network {name!r}: the CIFAR ResNets supported are "
                         f"{', '.join(RESNET_DEPTHS)} (He et al. 2016, zero-padding shortcut).")
    return RESNET_DEPTHS[name]


def pad_shortcut(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Option A: every second pixel of ``x``, zero-padded on the channel axis to ``out_channels``
    (half of the new channels before ``x``'s, half after)."""
    pad = (out_channels - x.shape[1]) // 2
    return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, out_channels - x.shape[1] - pad))


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` (option-A shortcut when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return pad_shortcut(x, self.conv2.out_channels) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """A CIFAR ResNet of ``depth = 6n + 2`` layers (module docstring).

    Attributes:
        blocks: every :class:`BasicBlock` in order (``stage_of[i]`` is block ``i``'s stage, 0–2).
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"A CIFAR ResNet has depth 6n + 2 (20, 32, 44, 56, 110), got {depth}.")
        self.depth, self.num_classes = depth, num_classes
        per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        blocks, self.stage_of = [], []
        in_planes = STAGE_WIDTHS[0]
        for stage, planes in enumerate(STAGE_WIDTHS):
            for index in range(per_stage):
                blocks.append(BasicBlock(in_planes, planes, 2 if stage and index == 0 else 1))
                self.stage_of.append(stage)
                in_planes = planes
        self.blocks = nn.ModuleList(blocks)
        self.linear = nn.Linear(STAGE_WIDTHS[-1], num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for block in self.blocks:
            out = block(out)
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def conv_bn_pairs(network: CifarResNet) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Every convolution with the BatchNorm after it, in forward order: the stem, then each
    block's conv1 and conv2."""
    pairs = [(network.conv1, network.bn1)]
    for block in network.blocks:
        pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    return pairs


def conv_groups(network: CifarResNet) -> list[int | None]:
    """Per convolution of :func:`conv_bn_pairs`: the stage whose residual stream it writes to
    (channels tied by the residual additions), or ``None`` for a block's first convolution (free)."""
    groups: list[int | None] = [0]
    for stage in network.stage_of:
        groups += [None, stage]
    return groups


def cifar_resnet(name: str, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """An untrained ``"resnet20"`` or ``"resnet56"``."""
    return CifarResNet(check_resnet_name(name), num_classes, in_channels)
