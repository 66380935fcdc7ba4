"""Backbones and pruning-aware modules, one file per family."""

from prune_gym.models.grouped_cnn import (
    BACKBONES,
    BackboneSpec,
    GroupedCNN,
    get_backbone_spec,
    prefix_widths,
    run_grouped,
)

__all__ = ["BACKBONES", "BackboneSpec", "GroupedCNN", "get_backbone_spec", "prefix_widths", "run_grouped"]
