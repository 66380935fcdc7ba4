"""Deployment paths of a runtime-pruned network: one image at a time, decision network included.

:class:`RuntimePrunedNet` serves the environments: activations of a whole batch in one zero-padded
tensor, observations as numpy arrays, decisions through a numpy ``decide(obs)``. For one image that
bookkeeping costs more than the pruned convolutions save (measured on cnn4: 0.95 ms full vs
1.38 ms under the trained default policy at 5.3× fewer MACs). :class:`SingleImagePath` runs the
same computation for batch 1 without that bookkeeping (the convolutions in torch, the RNP-DQN's
decision network in numpy, see :class:`~prune_gym.agents.rnp_dqn.SingleImageDecisionCell`):

    pooled features → decision cell (encoder → GRU cell → decoder) → argmax → the pre-folded,
    pre-sliced conv for that (input width, output groups) pair → max-pool → ReLU → …

Every folded weight is looked up in a table built once, the MAC fraction the decision network
reads is Python arithmetic, and no numpy array or observation vector is built. Its logits and
chosen groups are the runtime's under the same decision network (tested).

A decision function opts in by having a ``decision_cell()`` method that returns a
:class:`DecisionCell`-shaped module (the RNP-DQN's :class:`~prune_gym.agents.rnp_dqn.RecurrentDecider`
does); a constant rule (``uniform_decision``) needs none. Build the path after the backbone's last
fine-tuning: it copies the folded weights.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from prune_gym.pruning.runtime import DecisionFunction, RuntimePrunedNet, decision_macs


class DecisionCell(Protocol):
    """One decision of a decision network on one image, in torch.

    ``initial_state()`` is the recurrent state before the first decision (an empty tensor for a
    stateless network); ``step(pooled, index, macs_fraction, state)`` takes the 1×w pooled features
    of the previous layer (``w`` its active channels), the decision index (0-based), the fraction
    of the full backbone's MACs used so far, and returns the 1×k action values and the new state.
    The state is the cell's own business, and the action values may be a tensor or a numpy array
    (only their ``argmax()`` is read): a decider's ``single_image_cell()`` may compute in numpy.
    """

    def initial_state(self) -> torch.Tensor: ...

    def step(self, pooled: torch.Tensor, index: int, macs_fraction: float,
             state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class SingleImagePath:
    """Batch-1 inference of ``runtime``'s network under a decision function (module docstring).

    Args:
        runtime: the folded network (its current weights are copied).
        decide: a decision function with a ``decision_cell()`` method or a ``constant_action``
            attribute (:func:`~prune_gym.pruning.runtime.uniform_decision`).

    Raises:
        TypeError: ``decide`` offers neither (e.g. an SB3 policy, or a random rule).
    """

    def __init__(self, runtime: RuntimePrunedNet, decide: DecisionFunction):
        self.runtime = runtime
        self.k, self.num_decisions = runtime.k, runtime.num_decisions
        self.constant_action: int | None = getattr(decide, "constant_action", None)
        self.cell: DecisionCell | None = None
        if self.constant_action is None:
            # On the CPU a decider may offer a cell made for one image (the RNP-DQN's runs in numpy,
            # where a decision at batch 1 took 29–31 µs against torch's 50–53); else its torch cell.
            single = getattr(decide, "single_image_cell", None) if runtime.device.type == "cpu" else None
            make_cell = single or getattr(decide, "decision_cell", None)
            if make_cell is None:
                raise TypeError(f"{decide!r} has no decision_cell() method and no constant_action: the single-image "
                                "path runs decisions in torch. Use RuntimePrunedNet for numpy decision functions.")
            self.cell = make_cell()
        self.decision_macs = decision_macs(decide)
        backbone, costs = runtime.backbone, runtime.costs
        self.memory_format = runtime.memory_format
        self.pool_after = list(backbone.spec.pool_after)
        self.stem_weight, self.stem_bias = runtime._layer_weights(0, 1, runtime.image_shape[0])
        width0 = backbone.group_widths[0][0]
        # table[layer][(width_in, groups)] = (weight, bias, width_out, MACs); layer 1 sees full input.
        self.table: list[dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, int, int]]] = [{}]
        for layer in range(1, runtime.num_decisions + 1):
            inputs = [width0] if layer == 1 else backbone.group_widths[layer - 1]
            entries = {}
            for width_in in inputs:
                for groups in range(1, self.k + 1):
                    weight, bias = runtime._layer_weights(layer, groups, width_in)
                    width_out = backbone.group_widths[layer][groups - 1]
                    entries[(width_in, groups)] = (weight, bias, width_out, int(costs[layer].macs(width_in, width_out)))
            self.table.append(entries)
        self.stem_macs = int(costs[0].macs())
        self.head_cost = costs[-1]
        self.head_weights = {width: runtime._head_weight[:, :width] for width in backbone.group_widths[-1]}
        self.head_bias = runtime._head_bias
        self.macs_full = runtime.macs_full

    def _conv(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, layer: int) -> torch.Tensor:
        y = F.conv2d(h, weight, bias, padding=1)
        if self.pool_after[layer]:
            y = F.max_pool2d(y, 2)
        return F.relu_(y)

    @torch.inference_mode()
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, int, list[int]]:
        """Logits (1×classes) of one normalised image (1×C×H×W), the backbone's MACs it used, and
        the group count (1..k) chosen at every decided layer."""
        h = self._conv(image.contiguous(memory_format=self.memory_format), self.stem_weight, self.stem_bias, 0)
        width, macs = h.shape[1], self.stem_macs
        cell, constant = self.cell, self.constant_action
        state = cell.initial_state() if cell is not None else None
        chosen = []
        for index in range(self.num_decisions):
            if cell is None:
                groups = constant + 1
            else:
                q, state = cell.step(h.mean(dim=(2, 3)), index, macs / self.macs_full, state)
                groups = int(q.argmax()) + 1
            weight, bias, width, layer_macs = self.table[index + 1][(width, groups)]
            h = self._conv(h, weight, bias, index + 1)
            macs += layer_macs
            chosen.append(groups)
        logits = F.linear(h.mean(dim=(2, 3)), self.head_weights[width], self.head_bias)
        return logits, macs + int(self.head_cost.macs(width)), chosen

    __call__ = forward


@torch.inference_mode()
def batch1_ms(run: Callable[[torch.Tensor], object], inputs: torch.Tensor, passes: int = 1) -> float:
    """Milliseconds per image of ``run`` fed ``inputs`` one image at a time: after up to 20 warm-up
    images, the median over ``passes`` of each pass's mean (one pass: the mean). What ``prune-gym
    evaluate`` and ``prune-gym bench`` both report as batch-1 latency."""
    for index in range(min(20, len(inputs))):
        run(inputs[index: index + 1])
    timings = []
    for _ in range(passes):
        started = time.perf_counter()
        for index in range(len(inputs)):
            run(inputs[index: index + 1])
        timings.append((time.perf_counter() - started) / len(inputs))
    return 1000 * statistics.median(timings)
