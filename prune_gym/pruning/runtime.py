"""Runtime-pruned inference: compute only the channel groups a decision function selects, per image.

:class:`RuntimePrunedNet` is what a deployed RNP model runs and what the RNP environments step
through, so the latency a user measures and the MACs an agent is charged come from one code path.
For speed on CPUs it folds every per-width BatchNorm into its conv (weights and bias per output
width, and per input width so no weight is sliced at run time), keeps activations channels_last,
and pools before the in-place ReLU (they commute; pooling first touches 4× less memory).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from prune_gym.models.grouped_cnn import GroupedCNN, run_grouped
from prune_gym.pruning.counting import LayerCost, trace_layer_costs

# decide(observations: float32 N×obs_dim tensor) -> actions in 0..k-1 (compute action+1 groups)
DecisionFunction = Callable[[torch.Tensor], "torch.Tensor | np.ndarray | Sequence[int]"]


class RuntimePrunedNet:
    """A frozen, BN-folded view of a :class:`GroupedCNN` that runs any per-image group choice.

    The observation given to the decision function before deciding layer ``l`` (1-based among
    conv layers, ``l ≥ 1``) is a float32 vector of length :attr:`observation_size`:

    ============================  ===========================================================
    slice                         content
    ============================  ===========================================================
    ``[0, W)``                    global average pool of layer ``l-1``'s output (post ReLU),
                                  zero-padded to ``W`` = the widest layer
    ``[W, W + D)``                one-hot of the decision index ``l-1`` (``D`` = conv layers − 1)
    ``[W + D]``                   fraction of the full network's MACs used so far (0–1)
    ============================  ===========================================================

    Args:
        backbone: the trained network; its current weights are folded (call :meth:`refresh`
            after changing them).
        image_shape: C×H×W of the inputs, to trace per-layer costs.
        channels_last: keep activations in channels_last layout (faster for CPU convolutions).
    """

    def __init__(self, backbone: GroupedCNN, image_shape: Sequence[int], channels_last: bool = True):
        self.backbone = backbone
        self.k = backbone.k
        self.num_decisions = backbone.num_decisions
        self.image_shape = tuple(image_shape)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.costs: list[LayerCost] = trace_layer_costs(backbone.to_dense(), image_shape)
        self.macs_full = sum(cost.macs() for cost in self.costs)
        self.max_width = max(backbone.spec.widths)
        self.observation_size = self.max_width + self.num_decisions + 1
        self._width_tables = [torch.tensor(widths) for widths in backbone.group_widths]
        self.refresh()

    @property
    def device(self) -> torch.device:
        return self.backbone.head.weight.device

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-fold the backbone's current weights (after fine-tuning)."""
        backbone = self.backbone
        self._folded: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        for layer, conv in enumerate(backbone.convs):
            for norm_index, norm in enumerate(backbone.norms[layer]):
                scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
                width = norm.num_features
                weight = conv.weight[:width] * scale.view(-1, 1, 1, 1)
                self._folded[(layer, norm_index)] = (weight, norm.bias - norm.running_mean * scale)
        self._sliced: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._head_weight = backbone.head.weight.detach().clone()
        self._head_bias = backbone.head.bias.detach().clone()
        self._width_tables = [table.to(self.device) for table in self._width_tables]

    def _layer_weights(self, layer: int, norm_index: int, width_in: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (layer, norm_index, width_in)
        if key not in self._sliced:
            weight, bias = self._folded[(layer, norm_index)]
            self._sliced[key] = (weight[:, :width_in].contiguous(memory_format=self.memory_format), bias)
        return self._sliced[key]

    def _conv_pool_relu(self, layer: int, x: torch.Tensor, groups: int) -> torch.Tensor:
        weight, bias = self._layer_weights(layer, 0 if layer == 0 else groups - 1, x.shape[1])
        y = F.conv2d(x, weight, bias, padding=1)
        if self.backbone.spec.pool_after[layer]:
            y = F.max_pool2d(y, 2)
        return F.relu_(y)

    def stem(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer 0 at full width on normalised images.

        Returns:
            activations, active channels per image (int64), MACs used per image (int64).
        """
        x = images.to(self.device).contiguous(memory_format=self.memory_format)
        h = self._conv_pool_relu(0, x, self.k)
        count = images.shape[0]
        widths = torch.full((count,), h.shape[1], dtype=torch.long, device=self.device)
        macs = torch.full((count,), self.costs[0].macs(), dtype=torch.long, device=self.device)
        return h, widths, macs

    def layer(
        self, layer: int, h: torch.Tensor, in_widths: torch.Tensor, groups: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conv layer ``layer`` (1..L-1) at ``groups`` (1..k, per image or for all).

        Returns:
            activations, active channels per image, MACs of this layer per image.
        """
        output = run_grouped(h, in_widths, groups, lambda xs, g: self._conv_pool_relu(layer, xs, g))
        table = self._width_tables[layer]
        out_widths = (torch.full_like(in_widths, int(table[groups - 1])) if isinstance(groups, int)
                      else table[groups - 1])
        return output, out_widths, self.costs[layer].macs(in_widths, out_widths)

    def head(self, h: torch.Tensor, in_widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits from the last layer's activations, and the classifier's MACs per image."""
        pooled = h.mean(dim=(2, 3))
        logits = F.linear(pooled, self._head_weight[:, : pooled.shape[1]], self._head_bias)
        return logits, self.costs[-1].macs(in_widths)

    def observation(self, h: torch.Tensor, decision_index: int | None, macs_used: torch.Tensor) -> torch.Tensor:
        """The decision input before decided layer ``decision_index + 1`` (layout in the class
        docstring); ``decision_index=None`` gives the final observation, with an all-zero one-hot."""
        count = h.shape[0]
        obs = torch.zeros((count, self.observation_size), dtype=torch.float32, device=h.device)
        obs[:, : h.shape[1]] = h.mean(dim=(2, 3))
        if decision_index is not None:
            obs[:, self.max_width + decision_index] = 1.0
        obs[:, -1] = macs_used.float() / self.macs_full
        return obs

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, decide: DecisionFunction) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Classify normalised ``images`` computing only the groups ``decide`` picks.

        Returns:
            logits (N×classes), MACs per image (int64), chosen group counts (int64 N×(L-1), 1..k).
        """
        h, widths, macs = self.stem(images)
        chosen = torch.empty((images.shape[0], self.num_decisions), dtype=torch.long, device=self.device)
        for index in range(self.num_decisions):
            actions = torch.as_tensor(np.asarray(decide(self.observation(h, index, macs))), device=self.device)
            chosen[:, index] = actions.long().view(-1) + 1
            h, widths, layer_macs = self.layer(index + 1, h, widths, chosen[:, index])
            macs = macs + layer_macs
        logits, head_macs = self.head(h, widths)
        return logits, macs + head_macs, chosen

    __call__ = forward


def uniform_decision(action: int) -> DecisionFunction:
    """A decision function that always picks ``action`` (``action + 1`` groups) for every image."""

    def decide(observations: torch.Tensor) -> torch.Tensor:
        return torch.full((observations.shape[0],), action, dtype=torch.long)

    return decide
