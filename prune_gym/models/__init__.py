"""Backbones and pruning-aware modules, one file per family."""

from prune_gym.models.grouped_cnn import (
    BACKBONES,
    BackboneSpec,
    GroupedCNN,
    get_backbone_spec,
    prefix_widths,
    run_grouped,
)
from prune_gym.models.masked_net import MASKED_NETS, HiddenLayer, MaskedNet, MaskedNetSpec, get_masked_net_spec

__all__ = ["BACKBONES", "MASKED_NETS", "BackboneSpec", "GroupedCNN", "HiddenLayer", "MaskedNet", "MaskedNetSpec",
           "get_backbone_spec", "get_masked_net_spec", "prefix_widths", "run_grouped"]
