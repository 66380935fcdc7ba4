"""Plain sequential networks whose hidden nodes (dense) and filters (conv) can be masked out.

These are DropNet's networks (Tan & Motani, ICML 2020). A hidden layer is ``conv/linear → ReLU →
2×2 max-pool where set``; its output is multiplied by a 0/1 mask with one entry per unit, so a
masked unit contributes exactly zero downstream and (being multiplied by zero) receives no gradient.
The output layer is never masked. No batch norm: DropNet's models have none, and without it a
mask is an exact removal (a pruned model is the same function as the smaller dense model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prune_gym.models.pooling import max_pool_2x2

FORWARD_CHUNK = 128  # images per pass of MaskedNet.forward_in_chunks (see there why)


@dataclass(frozen=True)
class HiddenLayer:
    """One maskable layer: ``kind`` ``"conv"`` (3×3, padding 1) or ``"dense"``, ``units`` outputs,
    ``pool`` a 2×2 max-pool after the ReLU (conv only)."""

    kind: str
    units: int
    pool: bool = False


@dataclass(frozen=True)
class MaskedNetSpec:
    """Architecture of a maskable network: hidden layers in order, then a linear classifier."""

    name: str
    layers: tuple[HiddenLayer, ...]

    def __post_init__(self) -> None:
        kinds = [layer.kind for layer in self.layers]
        if not kinds or any(kind not in ("conv", "dense") for kind in kinds):
            raise ValueError(f"{self.name}: hidden layers must be 'conv' or 'dense', got {kinds}.")
        if "dense" in kinds and "conv" in kinds[kinds.index("dense"):]:
            raise ValueError(f"{self.name}: conv layers must come before dense layers, got {kinds}.")


# DropNet's models. MNIST: Model 1 (FC40-FC40) and Model 2 (Conv64-Conv32); CIFAR-10: Model 3
# (Conv64-Conv64-Conv128-Conv128-Dense256). Pooling: after both convs of the MNIST net; on
# CIFAR-10 after the first conv too (not only after each pair), which cuts the cost from 98.2 M to
# 25.8 M MACs per image — an epoch on the CIFAR-10 subset took ~50 s on one CPU thread with the
# pair-wise pooling, too slow for a drop-and-retrain cycle per environment step.
MASKED_NETS: dict[str, MaskedNetSpec] = {
    "fc40-fc40": MaskedNetSpec("fc40-fc40", (HiddenLayer("dense", 40), HiddenLayer("dense", 40))),
    "conv64-conv32": MaskedNetSpec("conv64-conv32", (HiddenLayer("conv", 64, pool=True),
                                                     HiddenLayer("conv", 32, pool=True))),
    "conv64x2-conv128x2-dense256": MaskedNetSpec("conv64x2-conv128x2-dense256", (
        HiddenLayer("conv", 64, pool=True), HiddenLayer("conv", 64, pool=True),
        HiddenLayer("conv", 128), HiddenLayer("conv", 128, pool=True),
        HiddenLayer("dense", 256),
    )),
}


def get_masked_net_spec(name: str) -> MaskedNetSpec:
    """The :data:`MASKED_NETS` entry called ``name``, with an error listing the valid names."""
    if name not in MASKED_NETS:
        raise ValueError(f"Unknown network {name!r}; expected one of {sorted(MASKED_NETS)}.")
    return MASKED_NETS[name]


class MaskedNet(nn.Module):
    """A :class:`MaskedNetSpec` network with one 0/1 mask buffer per hidden layer.

    Attributes:
        hidden: the hidden conv/linear layers, in order (``hidden.{i}`` in the MAC counter's names).
        head: the linear classifier.
        masks: ``masks[i]`` is a float 0/1 tensor of ``spec.layers[i].units`` entries (buffers, so
            they move with the model and are part of its ``state_dict``).
    """

    def __init__(self, spec: MaskedNetSpec, image_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.spec = spec
        channels, height, width = image_shape
        layers: list[nn.Module] = []
        features = channels
        flattened = False
        for layer in spec.layers:
            if layer.kind == "conv":
                layers.append(nn.Conv2d(features, layer.units, 3, padding=1))
                features = layer.units
                if layer.pool:
                    height, width = height // 2, width // 2
            else:
                if not flattened:
                    features, flattened = features * height * width, True
                layers.append(nn.Linear(features, layer.units))
                features = layer.units
        if not flattened:
            features = features * height * width
        self.hidden = nn.ModuleList(layers)
        self.head = nn.Linear(features, num_classes)
        for index, layer in enumerate(spec.layers):
            self.register_buffer(f"mask{index}", torch.ones(layer.units))

    @property
    def num_layers(self) -> int:
        return len(self.hidden)

    @property
    def masks(self) -> list[torch.Tensor]:
        return [getattr(self, f"mask{index}") for index in range(self.num_layers)]

    @property
    def layer_names(self) -> list[str]:
        """Qualified names of the hidden layers (the keys of ``kept_units`` in the MAC counter)."""
        return [f"hidden.{index}" for index in range(self.num_layers)]

    def set_masks(self, keep: Sequence[torch.Tensor | Sequence[bool]]) -> None:
        """Replace every layer's mask by ``keep[i]`` (bool or 0/1, one entry per unit)."""
        if len(keep) != self.num_layers:
            raise ValueError(f"Expected {self.num_layers} masks, got {len(keep)}.")
        for mask, new in zip(self.masks, keep):
            new = torch.as_tensor(new, dtype=mask.dtype, device=mask.device)
            if new.shape != mask.shape:
                raise ValueError(f"A mask of shape {tuple(new.shape)} does not fit a layer of {len(mask)} units.")
            mask.copy_(new)

    def kept_units(self) -> dict[str, int]:
        """``{hidden layer name: units kept}`` (what :func:`count_macs` takes)."""
        return {name: int(mask.sum()) for name, mask in zip(self.layer_names, self.masks)}

    def forward(self, images: torch.Tensor, activations: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of ``images``; if ``activations`` is a list, every hidden layer's masked
        post-activation output (after ReLU and pooling) is appended to it."""
        x = images
        for layer, spec, mask in zip(self.hidden, self.spec.layers, self.masks):
            if spec.kind == "dense" and x.dim() > 2:
                x = x.flatten(1)
            x = layer(x)
            if spec.pool:
                x = max_pool_2x2(x)
            x = F.relu(x)  # after the pooling (they commute): a quarter of the values
            x = x * (mask.view(1, -1, 1, 1) if x.dim() == 4 else mask)
            if activations is not None:
                activations.append(x)
        return self.head(x.flatten(1))

    def forward_in_chunks(self, images: torch.Tensor, activations: list[torch.Tensor] | None = None) -> torch.Tensor:
        """:meth:`forward` of ``images`` run :data:`FORWARD_CHUNK` images at a time, the outputs
        (and ``activations``) concatenated: the same values as one pass.

        Why: the evaluation passes and the activation metric hand over 1,000 images at once, and at
        that size the conv feature maps (200 MB for the Conv64 layer on MNIST) no longer fit the
        caches; 128 at a time was 3.2× faster for a pass over the MNIST training split, with
        bit-identical logits (each image's output does not depend on its batch). Callers keep their
        1,000-image reductions, so every figure stays the same."""
        outputs: list[torch.Tensor] = []
        per_chunk: list[list[torch.Tensor]] = []
        for start in range(0, len(images), FORWARD_CHUNK):
            found: list[torch.Tensor] | None = [] if activations is not None else None
            outputs.append(self(images[start:start + FORWARD_CHUNK], found))
            if found is not None:
                per_chunk.append(found)
        if activations is not None:
            activations.extend(torch.cat(layer) for layer in zip(*per_chunk))
        return torch.cat(outputs)
