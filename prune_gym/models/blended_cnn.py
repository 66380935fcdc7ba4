"""A trained network blended with parallel low-rank branches (the AlphaBlend family).

Every conv layer of a trained plain CNN (its conv and batch norm, the "original") gets a parallel
branch with the same input and output shape:

    branch(x) = BN(conv1×1_{r→C_out}(conv3×3_{C_in→r}(x))),

a rank-``r`` factorisation of the 3×3 convolution whose conv weights are He-initialised. The layer
outputs ``α · original(x) + (1 − α) · branch(x)`` (pooling and ReLU follow as in the original).
The ranks are chosen once, one common fraction of every layer's output channels, so that the
network left when the originals are deleted — branches, head and everything else that is not an
original — has ``keep_params`` (default 35 %) of the original network's parameters, as close as
integer ranks allow. :meth:`BlendedCNN.handover` returns that network (real removal: a smaller
dense model), which computes exactly what the blended network computes at ``α = 0``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_branch(in_channels: int, out_channels: int, rank: int) -> nn.Sequential:
    """``conv3×3(in→rank) → conv1×1(rank→out) → BN(out)``, conv weights He-initialised."""
    branch = nn.Sequential(nn.Conv2d(in_channels, rank, 3, padding=1, bias=False),
                           nn.Conv2d(rank, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
    for conv in branch[:2]:
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    return branch


def branch_params(in_channels: int, out_channels: int, rank: int) -> int:
    """Parameters of :func:`make_branch` (checked against the counter in the tests)."""
    return 9 * in_channels * rank + rank * out_channels + 2 * out_channels


class BlendLayer(nn.Module):
    """``α · original(x) + (1 − α) · branch(x)``; the part at weight 0 is not computed."""

    def __init__(self, original: nn.Sequential, branch: nn.Sequential, alpha: torch.Tensor) -> None:
        super().__init__()
        self.original, self.branch = original, branch
        self._alpha = alpha  # shared 0-d buffer of the owning BlendedCNN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = float(self._alpha)
        if alpha >= 1.0:
            return self.original(x)
        if alpha <= 0.0:
            return self.branch(x)
        return alpha * self.original(x) + (1.0 - alpha) * self.branch(x)


def _conv_norm_pairs(network: nn.Sequential) -> list[int]:
    """Indices ``i`` of ``network`` where a Conv2d at ``i`` is followed by a BatchNorm2d."""
    modules = list(network)
    return [index for index in range(len(modules) - 1)
            if isinstance(modules[index], nn.Conv2d) and isinstance(modules[index + 1], nn.BatchNorm2d)]


def total_parameters(module: nn.Module) -> int:
    """Every parameter of ``module``, batch norms included: what ``keep_params`` is a fraction of
    (the method's own budget, so the branch sizes stay its). The project's accounting count (conv
    and linear weights only) is :func:`prune_gym.pruning.counting.count_params`."""
    return sum(parameter.numel() for parameter in module.parameters())


def choose_ranks(network: nn.Sequential, keep_params: float) -> list[int]:
    """Branch ranks ``max(1, round(s · C_out))`` with the one scale ``s`` that brings the handed-over
    network's parameter count closest to ``keep_params`` × the original's (:func:`total_parameters`)."""
    modules = list(network)
    pairs = _conv_norm_pairs(network)
    original_total = total_parameters(network)
    originals = sum(total_parameters(modules[i]) + total_parameters(modules[i + 1]) for i in pairs)
    rest = original_total - originals
    target = keep_params * original_total
    shapes = [(modules[i].in_channels, modules[i].out_channels) for i in pairs]
    if rest + sum(branch_params(c_in, c_out, 1) for c_in, c_out in shapes) > target:
        raise ValueError(f"keep_params={keep_params} is below what rank-1 branches need "
                         f"({(rest + sum(branch_params(i, o, 1) for i, o in shapes)) / original_total:.3f} of the "
                         "parameters); choose a larger keep_params.")
    best: tuple[float, list[int]] | None = None
    for step in range(1, 4001):
        ranks = [max(1, round(step / 1000 * c_out)) for _, c_out in shapes]
        total = rest + sum(branch_params(c_in, c_out, r) for (c_in, c_out), r in zip(shapes, ranks))
        if best is None or abs(total - target) < best[0]:
            best = (abs(total - target), ranks)
    assert best is not None
    return best[1]


class BlendedCNN(nn.Module):
    """A plain sequential CNN (conv → BN → … → head) with a parallel branch per conv layer.

    Args:
        original: the trained network as an ``nn.Sequential`` whose conv layers are each followed
            by a BatchNorm2d (e.g. :meth:`GroupedCNN.to_dense`); it is deep-copied.
        keep_params: fraction (0–1) of the original's parameters the handed-over network keeps.
        seed: seeds the He initialisation of the branches.
    """

    def __init__(self, original: nn.Sequential, keep_params: float = 0.35, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 < keep_params < 1.0:
            raise ValueError(f"keep_params must lie strictly between 0 and 1, got {keep_params}.")
        original = copy.deepcopy(original)
        self.register_buffer("alpha", torch.ones(()))
        self.params_original = total_parameters(original)
        self.ranks = choose_ranks(original, keep_params)
        modules = list(original)
        pairs = _conv_norm_pairs(original)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            blended: list[nn.Module] = []
            index = 0
            while index < len(modules):
                if index in pairs:
                    conv = modules[index]
                    rank = self.ranks[pairs.index(index)]
                    branch = make_branch(conv.in_channels, conv.out_channels, rank).to(conv.weight.device)
                    blended.append(BlendLayer(nn.Sequential(conv, modules[index + 1]), branch, self.alpha))
                    index += 2
                else:
                    blended.append(modules[index])
                    index += 1
        finally:
            torch.random.set_rng_state(generator_state)
        self.body = nn.Sequential(*blended)

    def _apply(self, fn, recurse=True):  # keep every BlendLayer pointing at the moved buffer
        result = super()._apply(fn, recurse)
        for module in self.blend_layers():
            module._alpha = self.alpha
        return result

    def blend_layers(self) -> list[BlendLayer]:
        return [module for module in self.body if isinstance(module, BlendLayer)]

    def set_alpha(self, alpha: float) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {alpha}.")
        self.alpha.fill_(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @torch.no_grad()
    def handover(self) -> nn.Sequential:
        """The network at ``α = 0`` with the originals deleted: every blend layer becomes its branch
        (copied; the blended model is unchanged). Same outputs as this model at ``α = 0``."""
        modules = [copy.deepcopy(module.branch if isinstance(module, BlendLayer) else module) for module in self.body]
        return nn.Sequential(*modules).train(self.training)
