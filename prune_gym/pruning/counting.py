"""The project's one MAC and parameter counter.

Every environment, table, benchmark and plot counts cost with this module, so figures from
different environments are comparable. Conventions:

* A MAC is one multiply-accumulate of a convolution or linear layer, **per image**. Batch norm,
  activations and pooling are not counted (they are O(activations), not O(weights × positions)).
  ``torch.utils.flop_counter`` reports ``2 × MACs`` FLOPs for the same layers; a test checks it.
* A parameter is one weight or bias of a convolution or linear layer, **of the units actually
  kept** (:func:`count_params`): batch-norm affine parameters, learned activation parameters and
  anything else that is O(channels) are not counted, for the same reason as above. Where the kept
  units vary per image (RNP), the count is per image too (the weights that image touched).
* A network "with per-layer channel prefixes" keeps the first ``n`` output units of some layers
  (``kept_units``). In a sequential chain a layer's inputs are its predecessor's outputs, so the
  input units kept follow from the previous layer (and scale through a flatten). For other
  topologies remove the channels for real (smaller dense model) and count that model.
* A recurrent cell counts its matrix products too: a GRU cell with input size ``i`` and hidden
  size ``h`` is ``3 · (i·h + h·h)`` MACs per step (three gates, each an input and a hidden
  product); its gates' elementwise work (sigmoids, tanh, the blend) is O(h) and not counted, as
  biases, activations and pooling are not. A decision network's cost per image is the sum over the
  decisions it takes for that image (:func:`decision_macs` in :mod:`prune_gym.pruning.runtime`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerCost:
    """Shape facts of one conv or linear layer that fix its cost.

    Attributes:
        name: qualified module name in the traced model.
        kind: ``"conv"`` or ``"linear"``.
        in_units, out_units: input and output channels (conv) or features (linear).
        positions: output positions per image (H_out × W_out; 1 for linear).
        kernel_area: kh × kw (1 for linear).
        groups: convolution groups (1 for linear).
        has_bias: whether the layer adds a bias per output unit.
    """

    name: str
    kind: str
    in_units: int
    out_units: int
    positions: int
    kernel_area: int
    groups: int = 1
    has_bias: bool = False

    def macs(self, in_units: int | torch.Tensor | None = None, out_units: int | torch.Tensor | None = None):
        """MACs per image with ``in_units`` inputs and ``out_units`` outputs kept (default: all).

        Works elementwise on int64 tensors, so per-sample costs of a batch come from one call.
        """
        kept_in = self.in_units if in_units is None else in_units
        kept_out = self.out_units if out_units is None else out_units
        return kept_in * kept_out * self.kernel_area * self.positions // self.groups

    def params(self, in_units: int | None = None, out_units: int | None = None) -> int:
        """Weights (and bias) touched with the given units kept."""
        kept_in = self.in_units if in_units is None else in_units
        kept_out = self.out_units if out_units is None else out_units
        return kept_in * kept_out * self.kernel_area // self.groups + (kept_out if self.has_bias else 0)


def gru_cell_macs(input_size: int, hidden_size: int) -> int:
    """MACs of one step of a GRU cell (module docstring): three gates × (input + hidden product)."""
    return 3 * (input_size * hidden_size + hidden_size * hidden_size)


def trace_layer_costs(model: nn.Module, input_shape: Sequence[int] | None,
                      run: Callable[[], object] | None = None) -> list[LayerCost]:
    """Run one image of shape ``input_shape`` (C×H×W, or a feature vector's shape) through ``model``
    and record every conv/linear layer in execution order; with ``run``, call that instead (e.g. an
    agent's ``predict`` on one observation), so only the layers it actually runs are recorded. The
    model's train/eval mode is restored afterwards."""
    costs: list[LayerCost] = []
    names = {module: name for name, module in model.named_modules()}

    def record(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Conv2d):
            costs.append(LayerCost(
                names[module], "conv", module.in_channels, module.out_channels,
                output.shape[-2] * output.shape[-1], module.kernel_size[0] * module.kernel_size[1],
                module.groups, module.bias is not None,
            ))
        else:
            costs.append(LayerCost(names[module], "linear", module.in_features, module.out_features, 1, 1,
                                   1, module.bias is not None))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            if run is not None:
                run()
            else:
                model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return costs


def kept_inputs(costs: Sequence[LayerCost], kept_outputs: Sequence[int]) -> list[int]:
    """Input units kept by each layer of a sequential chain, given the output units each keeps.

    A layer whose input count is a multiple of its predecessor's output count (a flatten after a
    conv) keeps the same fraction of its inputs; otherwise it keeps all of them.
    """
    kept = []
    for index, cost in enumerate(costs):
        previous = costs[index - 1] if index else None
        if previous is not None and cost.in_units % previous.out_units == 0 and cost.groups == 1:
            kept.append(kept_outputs[index - 1] * (cost.in_units // previous.out_units))
        else:
            kept.append(cost.in_units)
    return kept


def _kept_layer_units(
    model: nn.Module, input_shape: Sequence[int], kept_units: Mapping[str, int] | None
) -> list[tuple[LayerCost, int, int]]:
    """(cost, input units kept, output units kept) of every conv/linear layer of ``model``."""
    costs = trace_layer_costs(model, input_shape)
    kept_outputs = [(kept_units or {}).get(cost.name, cost.out_units) for cost in costs]
    return list(zip(costs, kept_inputs(costs, kept_outputs), kept_outputs))


def count_macs(
    model: nn.Module, input_shape: Sequence[int], kept_units: Mapping[str, int] | None = None
) -> int:
    """MACs per image of ``model`` on inputs of shape ``input_shape`` (C×H×W).

    Args:
        kept_units: optional ``{layer name: output units kept}`` — the network restricted to those
            prefixes (see the module docstring for how inputs follow). Which units are kept does
            not change the cost, so this also counts a network whose units are masked (any subset
            of ``n`` units of a layer costs what its first ``n`` do).
    """
    return sum(cost.macs(kept_in, kept_out) for cost, kept_in, kept_out in
               _kept_layer_units(model, input_shape, kept_units))


def count_params(
    model: nn.Module, input_shape: Sequence[int], kept_units: Mapping[str, int] | None = None
) -> int:
    """The project's one parameter count: conv/linear weights and biases that remain when each
    layer keeps ``kept_units`` output units (inputs follow as in :func:`count_macs`); without
    ``kept_units`` the whole model's. Batch-norm and other O(channels) parameters are not counted
    (see the module docstring)."""
    return sum(cost.params(kept_in, kept_out) for cost, kept_in, kept_out in
               _kept_layer_units(model, input_shape, kept_units))
