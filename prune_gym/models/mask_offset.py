"""Learned continuous channel masks on a CIFAR ResNet (the MaskOffset family's pruning mechanics).

Every convolution of a :class:`~prune_gym.models.resnet_cifar.CifarResNet` gets a small
**pruning-model** (:class:`PruningModel`) that reads the convolution's input and outputs one value
per output channel; :class:`PruningConv2D` turns that output into the **continuous mask** of the
thesis's eq. 4.3 (:func:`continuous_mask`) and multiplies the layer's channels by it. A mask value
of zero is a pruned channel. The masks are differentiable in the pruning-models' outputs, so the
one cross-entropy loss trains weights and pruning-models together.

Why the mask multiplies the output of the BatchNorm that follows the convolution, not the
convolution's own output: a BN after a masked convolution would add its bias back and revive a
pruned channel. The wrapper therefore holds the convolution *and* its BN; folding a mask value
into the BN's affine parameters is then exact (:mod:`prune_gym.pruning.resnet_pruning`).

Residual additions tie channels: the stem and every block's second convolution of a stage write
into the same residual stream, so they share one mask (:func:`tie_masks`: the mean of the tied
layers' masks less 70 % of its channel mean, through a ReLU, so that zeros come back). A stream is
computed before the layers that add to it, so during a pruning iteration each tied layer averages
its own fresh mask with the other tied layers' latest ones; between iterations (evaluation,
freezing, extraction) every tied layer uses the one mask of the stored state. The zero-padding
shortcut that doubles the channels carries the previous stream, padded, masked with the new
stream's mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prune_gym.models.resnet_cifar import CifarResNet, conv_bn_pairs, conv_groups

# The thesis's defaults: the offset of eq. 4.3 and the share of the tied mask's mean subtracted.
DEFAULT_OFFSET = 1.15
DEFAULT_TIE_FRACTION = 0.7
PRUNING_MODEL_SIZE = 16  # the pruning-model's input resolution (16×16 → four max-pools → 1×1)


def continuous_mask(previous: torch.Tensor, y: torch.Tensor, offset: float, t: int, interacting: float,
                    max_iter: int) -> torch.Tensor:
    """Eq. 4.3: ``ReLU(½·(previous + (BM(y) − M(y)) / sqrt(V(y))) + offset − (t + interacting) / max_iter)``.

    Args:
        previous: the mask of the previous iteration, shape (C,).
        y: the pruning-model's output on the batch, shape (N, C).
        offset: 1.15 in the thesis; t: the pruning iteration (0-based); interacting: the user's
            (or agent's) shift in iterations; max_iter: the pruning phase's length in iterations.

    BM is the mean over the batch (one value per channel), M the mean over batch and channels and
    V the (population) variance of all of ``y``'s entries.
    """
    standardized = (y.mean(0) - y.mean()) / y.var(unbiased=False).clamp_min(1e-12).sqrt()
    return F.relu(0.5 * (previous + standardized) + offset - (t + interacting) / max_iter)


def tie_masks(masks: list[torch.Tensor], tie_fraction: float = DEFAULT_TIE_FRACTION) -> torch.Tensor:
    """One mask for channels tied by residual additions: ``ReLU(mean − tie_fraction · channel mean)``
    of the layers' masks (averaging alone would keep a channel unless every layer zeroes it)."""
    mean = torch.stack(masks).mean(0)
    return F.relu(mean - tie_fraction * mean.mean())


class PruningModel(nn.Module):
    """The pruning-model of one convolution: its input resized to 16×16 → depthwise convolution
    to twice the input channels → four blocks of (grouped 3×3 convolution with groups = input
    channels, BN, ReLU, max-pool 2) down to 1×1 → squeeze → ``Linear`` to one value per output
    channel of the masked convolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        width = 2 * in_channels
        self.expand = nn.Conv2d(in_channels, width, 3, padding=1, groups=in_channels)
        layers: list[nn.Module] = []
        for _ in range(4):
            layers += [nn.Conv2d(width, width, 3, padding=1, groups=in_channels), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2)]
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(PRUNING_MODEL_SIZE, PRUNING_MODEL_SIZE), mode="bilinear", align_corners=False)
        return self.head(self.blocks(self.expand(x)).flatten(1))


class PruningConv2D(nn.Module):
    """A convolution, the BatchNorm after it and its pruning-model: ``mask ⊙ bn(conv(x))``.

    The mask comes from the owner (:class:`MaskedResNet`), which ties masks across residual
    additions; :meth:`fresh_mask` is this layer's own eq.-4.3 mask for the batch ``x``.

    Attributes:
        state: this layer's own mask after the last pruning iteration (before tying), shape (C,).
    """

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d):
        super().__init__()
        self.conv, self.norm = conv, norm
        self.pruning_model = PruningModel(conv.in_channels, conv.out_channels)
        self.register_buffer("state", torch.ones(conv.out_channels))

    def fresh_mask(self, x: torch.Tensor, offset: float, t: int, interacting: float, max_iter: int) -> torch.Tensor:
        return continuous_mask(self.state, self.pruning_model(x), offset, t, interacting, max_iter)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)) * mask.view(1, -1, 1, 1)


class MaskedResNet(nn.Module):
    """A CIFAR ResNet whose every convolution is a :class:`PruningConv2D` (module docstring).

    In training mode and not :attr:`frozen`, a forward pass is one **pruning iteration**: every
    layer computes its eq.-4.3 mask from the batch at iteration :attr:`iteration` with the
    current :attr:`interacting`, the masks multiply the channels (gradients flow into the
    pruning-models), the new masks are stored and the iteration count advances. Otherwise the
    stored masks apply (:meth:`applied_masks`). Before the first iteration every mask is 1: the
    network is the pretrained one.

    Args:
        network: the pretrained network (its modules are shared, not copied).
        max_iter: the pruning phase's length in iterations; offset, tie_fraction: see eq. 4.3
            and :func:`tie_masks`.
    """

    def __init__(self, network: CifarResNet, max_iter: int, offset: float = DEFAULT_OFFSET,
                 tie_fraction: float = DEFAULT_TIE_FRACTION):
        super().__init__()
        self.network = network
        self.max_iter, self.offset, self.tie_fraction = max_iter, offset, tie_fraction
        self.interacting = 0.0
        self.iteration = 0
        self.frozen = False
        self.layers = nn.ModuleList(PruningConv2D(conv, norm) for conv, norm in conv_bn_pairs(network))
        self.groups = conv_groups(network)
        self.members = {group: [index for index, g in enumerate(self.groups) if g == group]
                        for group in set(self.groups) if group is not None}

    def pruning_parameters(self) -> list[nn.Parameter]:
        return [parameter for layer in self.layers for parameter in layer.pruning_model.parameters()]

    @property
    def updating(self) -> bool:
        return self.training and not self.frozen

    def applied_masks(self) -> list[torch.Tensor]:
        """The mask each convolution applies between iterations (tied layers share one)."""
        if self.iteration == 0:
            return [torch.ones_like(layer.state) for layer in self.layers]
        tied = {group: tie_masks([self.layers[i].state for i in members], self.tie_fraction)
                for group, members in self.members.items()}
        return [layer.state if group is None else tied[group] for layer, group in zip(self.layers, self.groups)]

    def freeze(self) -> None:
        """End the pruning phase: the stored masks stay as they are."""
        self.frozen = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        network = self.network
        fresh: dict[int, torch.Tensor] = {}
        stored = None if self.updating else self.applied_masks()

        def run(index: int, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            layer = self.layers[index]
            if stored is not None:
                mask = stored[index]
            else:
                fresh[index] = layer.fresh_mask(inputs, self.offset, self.iteration, self.interacting, self.max_iter)
                group = self.groups[index]
                mask = fresh[index] if group is None else tie_masks(
                    [fresh.get(i, self.layers[i].state) for i in self.members[group]], self.tie_fraction)
            return layer(inputs, mask), mask

        out = F.relu(run(0, x)[0])
        for number, block in enumerate(network.blocks):
            hidden = F.relu(run(1 + 2 * number, out)[0])
            branch, mask = run(2 + 2 * number, hidden)
            shortcut = block.shortcut(out)
            if block.downsample:  # the padded previous stream, masked with this stream's mask
                shortcut = shortcut * mask.view(1, -1, 1, 1)
            out = F.relu(branch + shortcut)
        if fresh:
            with torch.no_grad():
                for index, mask in fresh.items():
                    self.layers[index].state.copy_(mask)
            self.iteration += 1
        return network.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))
