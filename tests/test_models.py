import numpy as np
import pytest
import torch

from prune_gym.models import BACKBONES, GroupedCNN, get_backbone_spec, run_grouped
from prune_gym.pruning.runtime import RuntimePrunedNet, uniform_decision


def randomised_backbone(name="cnn4", k=4, in_channels=3) -> GroupedCNN:
    torch.manual_seed(0)
    model = GroupedCNN(BACKBONES[name], in_channels, 10, k)
    with torch.no_grad():  # non-trivial BN statistics so that folding is really tested
        for norms in model.norms:
            for norm in norms:
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("groups", [1, 2, 3, 4])
def test_dense_copy_and_folded_runtime_equal_the_grouped_forward(groups):
    model = randomised_backbone()
    images = torch.randn(6, 3, 32, 32)
    expected = model(images, groups)
    assert torch.allclose(model.to_dense(groups)(images), expected, atol=1e-5)
    runtime = RuntimePrunedNet(model, (3, 32, 32))
    logits, macs, chosen = runtime(images, uniform_decision(groups - 1))
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.allclose(runtime.forward_static(images, groups), expected, atol=1e-5)
    assert (chosen == groups).all()


def test_per_sample_groups_equal_one_image_at_a_time():
    model = randomised_backbone("cnn6")
    images = torch.randn(10, 3, 32, 32)
    groups = torch.randint(1, 5, (10, model.num_decisions), generator=torch.Generator().manual_seed(1))
    batched = model(images, groups)
    single = torch.cat([model(images[i:i + 1], groups[i].tolist()) for i in range(10)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_skipped_channels_are_exact_zeros_and_at_most_k_convolutions_run():
    calls = []

    def compute(x, g):
        calls.append(g)
        return torch.ones(x.shape[0], 4 * g, 2, 2)

    groups = np.array([3, 1, 3, 2, 1, 3])
    out = run_grouped(torch.ones(6, 5, 2, 2), np.full(6, 5), groups, compute)
    assert sorted(calls) == [1, 2, 3]
    assert out.shape == (6, 12, 2, 2)
    for row, g in enumerate(groups.tolist()):
        assert (out[row, : 4 * g] == 1).all() and (out[row, 4 * g:] == 0).all()


def test_each_subset_sees_only_its_own_input_channels():
    seen = {}

    def compute(x, g):
        seen[g] = x.shape[1]
        return x[:, :1]

    run_grouped(torch.ones(3, 8, 1, 1), np.array([2, 8, 4]), np.array([1, 2, 1]), compute)
    assert seen == {1: 4, 2: 8}


def test_k_larger_than_a_layer_is_a_clear_error():
    with pytest.raises(ValueError, match=r"narrowest layer has 32 channels, so k must lie in 1\.\.32"):
        GroupedCNN(BACKBONES["cnn4"], 3, 10, k=33)


def test_bad_group_choices_are_rejected():
    model = randomised_backbone()
    with pytest.raises(ValueError, match="expected 3 group counts in 1..4"):
        model(torch.zeros(1, 3, 32, 32), [1, 5, 2])
    with pytest.raises(ValueError, match="Unknown backbone"):
        get_backbone_spec("resnet1000")


@pytest.mark.parametrize("name, widths", [("cnn4-w0.5", (16, 32, 64, 128)), ("cnn4-w1.3", (42, 83, 166, 333))])
def test_width_factor_scales_every_layer(name, widths):
    assert get_backbone_spec(name).widths == widths


def test_wider_cnn4_costs_about_the_seed_reports_multiplications():
    from prune_gym.pruning.counting import count_macs

    model = GroupedCNN(get_backbone_spec("cnn4-w1.3"), 3, 10, k=4).to_dense()
    assert 25.0e6 < count_macs(model, (3, 32, 32)) < 25.4e6  # the seed report's 4-conv net: 25.4 M


@pytest.mark.parametrize("name", ["cnn4-w0", "cnn4-w13", "cnn4-wide", "cnn4-w-1"])
def test_bad_width_factors_are_refused(name):
    with pytest.raises(ValueError, match=r"width factor after '-w' must be a number in \(0, 4\]"):
        get_backbone_spec(name)


def test_uneven_groups_cover_the_layer():
    model = GroupedCNN(BACKBONES["cnn4"], 1, 10, k=3)
    assert [widths[-1] for widths in model.group_widths] == list(BACKBONES["cnn4"].widths)
    assert model.group_widths[1] == [21, 43, 64]


def test_one_batchnorm_per_input_output_group_pair():
    model = GroupedCNN(BACKBONES["cnn4"], 3, 10, k=4)
    assert [len(norms) for norms in model.norms] == [1, 4, 16, 16]
    assert model.norm_index(2, groups_in=3, groups_out=2) == 9
    assert model.norms[2][9].num_features == 64  # 2 of 4 groups of 128 channels
    assert model.input_groups(2, 48) == 3 and model.input_groups(1, 32) == 1


@pytest.mark.parametrize("shape", [(64, 32, 16, 16), (40, 16, 17, 15), (1, 8, 8, 8)])
def test_channels_last_pooling_gives_max_pool2d_bits(shape):
    """The pairwise-maxima pooling of the batched runtime (large maps, odd sizes cropped like
    F.max_pool2d) and its fallbacks (small maps, NCHW maps, autograd) return F.max_pool2d's values
    in channels_last."""
    from prune_gym.models.pooling import PAIRWISE_MIN_ELEMENTS, max_pool_2x2_channels_last

    torch.manual_seed(0)
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
    assert (x.numel() >= PAIRWISE_MIN_ELEMENTS) == (shape[0] > 1)  # both paths are exercised
    with torch.no_grad():
        pooled = max_pool_2x2_channels_last(x)
        assert torch.equal(pooled, torch.nn.functional.max_pool2d(x, 2))
        assert pooled.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(max_pool_2x2_channels_last(x.contiguous()), pooled)
    x.requires_grad_(True)
    max_pool_2x2_channels_last(x).sum().backward()  # with autograd: F.max_pool2d's one-winner gradient
    assert torch.equal(x.grad.sum(), torch.tensor(float(pooled.numel())))
