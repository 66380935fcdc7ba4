import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prune_gym.envs.layerprune import LayerPruneSettings
from prune_gym.models import BACKBONES, GroupedCNN
from prune_gym.models.alpha_cnn import AlphaCNN
from prune_gym.models.masked_net import MaskedNet, get_masked_net_spec
from prune_gym.models.resnet_cifar import cifar_resnet
from prune_gym.pruning.counting import count_macs, count_params, trace_layer_costs
from prune_gym.registry import ENV_TABLE


def flop_counter_macs(model: nn.Module, input_shape) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    return counter.get_total_flops() // 2  # FLOPs = 2 × MACs for conv and linear


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("groups", [1, 2, 3, 4])
def test_counter_matches_torch_flop_counter_on_every_prefix(backbone, groups):
    dense = GroupedCNN(BACKBONES[backbone], 3, 10, k=4).to_dense(groups)
    assert count_macs(dense, (3, 32, 32)) == flop_counter_macs(dense, (3, 32, 32))


def test_full_cnn4_costs_15_megamacs_as_registered():
    dense = GroupedCNN(BACKBONES["cnn4"], 3, 10).to_dense()
    assert count_macs(dense, (3, 32, 32)) == 15_043_072
    # conv: 3·32·9·1024 + 32·64·9·256 + 64·128·9·64 + 128·256·9·16; head: 256·10
    assert 3 * 32 * 9 * 1024 + 32 * 64 * 9 * 256 + 64 * 128 * 9 * 64 + 128 * 256 * 9 * 16 + 2560 == 15_043_072


def test_kept_units_equal_counting_the_sliced_dense_model():
    full = GroupedCNN(BACKBONES["cnn6"], 3, 10, k=4)
    dense_full = full.to_dense()
    names = [cost.name for cost in trace_layer_costs(dense_full, (3, 32, 32))]
    widths = [32, 32, 48, 64, 96, 192]  # prefixes of 4, 2, 3, 2, 3, 3 groups of the decided layers
    kept = dict(zip(names, widths))
    assert count_macs(dense_full, (3, 32, 32), kept) == count_macs(full.to_dense([2, 3, 2, 3, 3]), (3, 32, 32))


def test_flatten_then_linear_and_grouped_convs():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.Flatten(),
                          nn.Linear(8 * 24 * 24, 10))
    assert count_macs(model, (1, 28, 28)) == flop_counter_macs(model, (1, 28, 28))
    names = [cost.name for cost in trace_layer_costs(model, (1, 28, 28))]
    halved = count_macs(model, (1, 28, 28), {names[0]: 4})
    # halving conv0's outputs halves conv0 and the (per-sequential-chain) input of the next layer.
    assert halved == 4 * 9 * 26 * 26 + 8 * 9 * 24 * 24 + 8 * 24 * 24 * 10


def test_per_sample_tensor_costs_match_scalars():
    cost = trace_layer_costs(GroupedCNN(BACKBONES["cnn4"], 3, 10).to_dense(), (3, 32, 32))[2]
    kept_in, kept_out = np.array([16, 32, 64]), np.array([32, 96, 128])
    assert cost.macs(kept_in, kept_out).tolist() == [cost.macs(int(i), int(o)) for i, o in zip(kept_in, kept_out)]


def test_params_count_conv_and_linear_weights_and_biases_of_kept_units():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    # The batch norm's 8 affine parameters are not counted (the module docstring's convention).
    assert count_params(model, (3, 3, 3)) == 3 * 4 * 9 + 4 + 4 * 2 + 2
    # Keeping 1 of the conv's 4 channels keeps its weights and bias for 1 and the head's inputs for 1.
    assert count_params(model, (3, 3, 3), {"0": 1}) == 3 * 1 * 9 + 1 + 1 * 2 + 2


def _described_model(entry) -> tuple[nn.Module, tuple[int, int, int]]:
    """The dense model an env id's description states the MACs of, and its input shape."""
    if entry.entry_point.endswith(":DropNetEnv"):
        shape = (1, 28, 28) if entry.kwargs["dataset"] == "mnist" else (3, 32, 32)
        return MaskedNet(get_masked_net_spec(entry.kwargs["network"]), shape, 10), shape
    if entry.family == "MaskOffset":
        return cifar_resnet(entry.kwargs["network"]), (3, 32, 32)
    if entry.family == "LayerPrune":  # the id's kwargs over the family's defaults
        settings = LayerPruneSettings(**entry.kwargs)
        return AlphaCNN(3, 10, settings.width, settings.max_layers, stem_stride=settings.stem_stride,
                        pool_before=settings.pool_before), (3, 32, 32)
    return GroupedCNN(BACKBONES[entry.kwargs["backbone"]], 3, 10).to_dense(), (3, 32, 32)


@pytest.mark.parametrize("entry", [e for e in ENV_TABLE if re.search(r"[kM] MACs/image", e.description)],
                         ids=lambda e: e.id)
def test_mac_figures_in_env_descriptions_are_what_the_counter_measures(entry):
    number, unit = re.search(r"([\d.]+) ([kM]) MACs/image", entry.description).groups()
    model, shape = _described_model(entry)
    scale = 1e6 if unit == "M" else 1e3
    assert round(count_macs(model, shape) / scale, 1) == float(number)
