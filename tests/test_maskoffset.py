"""MaskOffset: the eq.-4.3 mask, residual ties, extraction, bad input, shipped weights, pretrain
and compare on tiny budgets (fake data of CIFAR-10's layout; seconds each)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import cheap_kwargs

from prune_gym import pretraining, shipped
from prune_gym.cli import main
from prune_gym.models.mask_offset import MaskedResNet, PruningModel, continuous_mask, tie_masks
from prune_gym.models.resnet_cifar import cifar_resnet, conv_bn_pairs
from prune_gym.pruning.counting import count_macs
from prune_gym.pruning.deploy import batch1_ms
from prune_gym.pruning.importance import FILTER_CRITERIA, filter_scores
from prune_gym.pruning.resnet_pruning import (
    extract_resnet,
    fold_batchnorms,
    inference_form,
    kept_per_convolution,
    masks_for_macs,
    pad_channels,
    rounded_count,
)

ENV_ID = "MaskOffset-CIFAR10-v0"


def make(fake_data_dir, **overrides):
    return gym.make(ENV_ID, **{**cheap_kwargs(ENV_ID, fake_data_dir), **overrides})


def test_mask_formula_on_a_hand_made_example():
    y = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # BM = (2, 3), M = 2.5, V = 1.25
    mask = continuous_mask(torch.tensor([0.0, 1.0]), y, offset=1.15, t=5, interacting=5.0, max_iter=10)
    z = 0.5 / 1.25 ** 0.5
    expected = torch.tensor([max(0.0, 0.5 * (0 - z) + 0.15), 0.5 * (1 + z) + 0.15])
    torch.testing.assert_close(mask, expected)
    assert mask[0] == 0  # a pruned channel


def test_tied_masks_average_and_subtract_seventy_percent_of_the_mean():
    tied = tie_masks([torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 2.0])])
    mean = torch.tensor([0.5, 0.0, 2.0])
    torch.testing.assert_close(tied, torch.relu(mean - 0.7 * mean.mean()))


def pruned_masked_network(iterations=3, interacting=2.0):
    torch.manual_seed(0)
    masked = MaskedResNet(cifar_resnet("resnet20"), max_iter=4)
    masked.interacting = interacting
    optimizer = torch.optim.SGD(masked.parameters(), lr=0.01)
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    masked.train()
    for _ in range(iterations):
        loss = torch.nn.functional.cross_entropy(masked(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return masked.eval(), images


def test_residual_additions_share_one_mask_and_gradients_reach_the_pruning_models():
    masked, _ = pruned_masked_network(iterations=1)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in masked.layers[0].pruning_model.parameters()
               if p.dim() > 1)
    masks = masked.applied_masks()
    for members in masked.members.values():  # stem + conv2s of a stage: one stream, one mask
        for index in members[1:]:
            torch.testing.assert_close(masks[index], masks[members[0]])
    assert masked.iteration == 1


def test_extraction_equals_the_masked_network_and_removes_the_pruning_models():
    masked, images = pruned_masked_network()
    masks = masked.applied_masks()
    assert any((mask == 0).any() for mask in masks) and any(((mask > 0) & (mask != 1)).any() for mask in masks)
    pruned = extract_resnet(masked.network, masks)
    with torch.no_grad():
        torch.testing.assert_close(pruned(images), masked(images), rtol=1e-4, atol=1e-5)
    assert not any(isinstance(module, PruningModel) for module in pruned.modules())
    assert count_macs(pruned, (3, 32, 32)) < count_macs(masked.network, (3, 32, 32))
    assert batch1_ms(pruned.eval(), images[:2]) > 0


def test_static_criteria_prune_to_a_mac_budget():
    torch.manual_seed(0)
    network = cifar_resnet("resnet20").eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    full = count_macs(network, (3, 32, 32))
    for criterion in FILTER_CRITERIA:
        scores = filter_scores(criterion, conv_bn_pairs(network),
                               lambda: torch.nn.functional.cross_entropy(network(images), labels),
                               torch.Generator().manual_seed(0))
        network.zero_grad(set_to_none=True)
        masks, macs = masks_for_macs(network, scores, 0.5 * full, (3, 32, 32))
        assert 0.4 * full < macs <= 0.5 * full, criterion
        assert macs == count_macs(extract_resnet(network, masks), (3, 32, 32))


@pytest.mark.parametrize("bad", [1.5, 0.0, -0.2, "half", float("nan")])
def test_bad_target_flops_is_refused(bad, fake_data_dir):
    with pytest.raises(ValueError, match="target_flops"):
        make(fake_data_dir, target_flops=bad)


def test_an_unknown_pretrain_precision_names_the_supported_ones(fake_data_dir):
    with pytest.raises(ValueError, match=r"pretrain_precision must be one of.*bf16"):
        make(fake_data_dir, pretrain_precision="float16")


def test_an_unsupported_network_names_the_supported_ones(fake_data_dir):
    with pytest.raises(ValueError, match="resnet20, resnet56"):
        make(fake_data_dir, network="resnet18")


def test_an_action_outside_the_box_is_refused_and_discrete_mode_masks_the_bounds(fake_data_dir):
    env = make(fake_data_dir).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"Invalid action .*\[-1.0, 1.0\]"):
        env.step(np.array([1.5], np.float32))
    discrete = make(fake_data_dir, action_mode="discrete", interacting_step=1.0).unwrapped
    discrete.reset(seed=0)
    discrete.step(2)  # raise to +max_iter: raising again is masked
    assert discrete.action_masks().tolist() == [True, True, False]


def test_target_flops_penalises_the_final_distance(fake_data_dir):
    returns = {}
    for target in (None, 0.5):
        env = make(fake_data_dir, target_flops=target, target_weight=10.0)
        env.reset(seed=0)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
            total, done = total + reward, terminated or truncated
        returns[target] = (total, info["macs"] / info["macs_full"])
    assert returns[0.5][0] == pytest.approx(returns[None][0] - 10.0 * abs(returns[0.5][1] - 0.5))


def test_shipped_resnet_weights_load_without_training(fake_data_dir, tmp_path, monkeypatch):
    config = shipped.ShippedConfig("resnet20-tiny", ENV_ID)
    kwargs = cheap_kwargs(ENV_ID, fake_data_dir)
    settings = make(fake_data_dir).unwrapped.settings
    pretraining.ship_backbone(config, settings.backbone_request(), kwargs["data_root"], "cpu", "test", tmp_path)
    monkeypatch.setattr(shipped, "SHIPPED_CONFIGS", (config,))
    shipped.write_index(tmp_path)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    monkeypatch.setattr(pretraining, "pretrain_classifier", lambda *args: pytest.fail("trained instead of loading"))
    env = make(fake_data_dir, weights="shipped").unwrapped
    _, info = env.reset(seed=0)
    assert info["macs"] == info["macs_full"] == count_macs(cifar_resnet("resnet20"), (3, 32, 32))


def test_pretrain_command_trains_the_resnet_at_a_tiny_budget(fake_data_dir, capsys, monkeypatch):
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    main(["pretrain", ENV_ID, "--env-kwargs", f"data_root={fake_data_dir}", "pretrain_steps=2",
          "pretrain_batch_size=4", "device=cpu"])
    out = capsys.readouterr().out
    assert "resnet20 on cifar10" in out and "40.55 M MACs/image" in out


def test_compare_runs_offset_policies_and_static_criteria_at_the_same_flops(fake_data_dir, tmp_path, capsys):
    kwargs = [f"{key}={value}" for key, value in cheap_kwargs(ENV_ID, fake_data_dir).items()]
    main(["compare", ENV_ID, "--policies", "fixed-offset,linear-to-target,l1,taylor", "--out", str(tmp_path),
          "--env-kwargs", *kwargs])
    from prune_gym.baselines.compare import read_csv

    final = {row["policy"]: row for row in read_csv(tmp_path / "results.csv") if row["final"]}
    assert set(final) == {"fixed-offset", "linear-to-target", "l1", "taylor"}
    for criterion in ("l1", "taylor"):
        assert final[criterion]["macs"] <= final["fixed-offset"]["macs"]
        assert final[criterion]["test_accuracy"] is not None
    assert (tmp_path / "pareto.png").is_file()


def test_resuming_a_comparison_reads_the_stored_fixed_offset_run_instead_of_replaying_it(
        fake_data_dir, tmp_path, monkeypatch):
    # A --resume with static criteria left to run played the whole fixed-offset episode again to
    # learn its FLOPs (8 minutes at the default budget), although its rows were in results.csv.
    from prune_gym.baselines import maskoffset as runner_module
    from prune_gym.baselines.compare import read_csv

    kwargs = [f"{key}={value}" for key, value in cheap_kwargs(ENV_ID, fake_data_dir).items()]
    main(["compare", ENV_ID, "--policies", "fixed-offset", "--out", str(tmp_path), "--env-kwargs", *kwargs])
    monkeypatch.setattr(runner_module, "_FIXED_OFFSET_RUNS", {})  # a new process after a kill

    def no_episode(*args, **kwargs):
        raise AssertionError("the fixed-offset episode was played again")

    monkeypatch.setattr(runner_module, "play_episode", no_episode)
    main(["compare", ENV_ID, "--policies", "fixed-offset,l1", "--resume", "--out", str(tmp_path),
          "--env-kwargs", *kwargs])
    final = {row["policy"]: row for row in read_csv(tmp_path / "results.csv") if row["final"]}
    assert set(final) == {"fixed-offset", "l1"} and final["l1"]["macs"] <= final["fixed-offset"]["macs"]


def test_the_finetune_only_control_fine_tunes_the_unpruned_network_without_an_episode(
        fake_data_dir, tmp_path, monkeypatch):
    from prune_gym.baselines import maskoffset as runner_module
    from prune_gym.baselines.compare import read_csv

    def no_episode(*args, **kwargs):
        raise AssertionError("the control played a pruning episode")

    monkeypatch.setattr(runner_module, "play_episode", no_episode)
    kwargs = [f"{key}={value}" for key, value in cheap_kwargs(ENV_ID, fake_data_dir).items()]
    main(["compare", ENV_ID, "--policies", "finetune-only", "--out", str(tmp_path), "--env-kwargs", *kwargs])
    rows = read_csv(tmp_path / "results.csv")
    final = next(row for row in rows if row["final"])
    assert final["policy"] == "finetune-only"
    assert (final["macs"], final["params"]) == (final["macs_full"], final["params_full"])
    assert final["test_accuracy"] is not None

    env = make(fake_data_dir).unwrapped
    result = env.finetune_unpruned(seed=0)
    assert result["final"]["criterion"] == "none"
    before = dict(env.original.named_parameters())
    changed = [name for name, weight in env.pruned.named_parameters() if not torch.equal(weight, before[name])]
    assert changed, "the fine-tune left every weight as it was"
    assert env.pruned is not env.original


def test_the_inference_form_gives_the_same_logits_with_folded_norms_and_padded_channels():
    masked, images = pruned_masked_network()
    network = masked.network
    for _conv, norm in conv_bn_pairs(network):  # BatchNorm statistics far from the identity
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    pruned = extract_resnet(network, masked.applied_masks()).eval()
    widths = [pruned.conv1.out_channels] + [c.out_channels for b in pruned.blocks for c in (b.conv1, b.conv2)]
    assert any(width % 8 for width in widths)  # something to pad
    with torch.no_grad():
        for original in (network.eval(), pruned):
            for round_to in (1, 8):
                form = inference_form(original, round_to)
                assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in form.modules())
                torch.testing.assert_close(form(images), original(images), rtol=1e-4, atol=1e-4)
        padded = inference_form(pruned, 8)
        padded_widths = [padded.conv1.out_channels] + [c.out_channels for b in padded.blocks
                                                        for c in (b.conv1, b.conv2)]
        assert all(width % 8 == 0 for width in padded_widths)
        assert all(p >= w for p, w in zip(padded_widths, widths))
        assert count_macs(pruned, (3, 32, 32)) < count_macs(padded, (3, 32, 32)) <= count_macs(network, (3, 32, 32))


def test_padding_needs_folded_norms_and_a_positive_multiple():
    masked, _ = pruned_masked_network(iterations=1)
    pruned = extract_resnet(masked.network, masked.applied_masks())
    with pytest.raises(ValueError, match="fold_batchnorms"):
        pad_channels(pruned, 8)
    with pytest.raises(ValueError, match="multiple"):
        pad_channels(fold_batchnorms(pruned), 0)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")  # deprecated in torch 2.14, still what deployments use
def test_the_pruned_network_traces_for_any_batch_size():
    # The shortcut once built its output from the input's batch size, which torch.jit.trace froze
    # at the traced batch: a network traced at batch 1 failed at batch 8.
    masked, images = pruned_masked_network()
    pruned = inference_form(extract_resnet(masked.network, masked.applied_masks()))
    assert any(block.shortcut is not None for block in pruned.blocks)
    with torch.no_grad():
        traced = torch.jit.trace(pruned, images[:1])
        torch.testing.assert_close(traced(images), pruned(images))


@pytest.mark.parametrize("count, width, multiple, expected", [
    (11, 16, 8, 8), (12, 16, 8, 16), (15, 16, 8, 16), (1, 16, 8, 8), (53, 64, 8, 56), (47, 64, 8, 48),
    (5, 6, 8, 6), (13, 16, 1, 13),
])
def test_channel_counts_round_to_the_nearest_multiple_within_the_layer(count, width, multiple, expected):
    assert rounded_count(count, width, multiple) == expected


def test_rounded_extraction_keeps_multiples_and_adds_channels_that_output_zero():
    masked, images = pruned_masked_network()
    network, masks = masked.network, masked.applied_masks()
    kept = kept_per_convolution(network, masks, 8)
    assert all(len(channels) % 8 == 0 for channels in kept)
    exact = kept_per_convolution(network, masks, 1)
    assert any(len(a) > len(b) for a, b in zip(kept, exact)) and any(len(a) < len(b) for a, b in zip(kept, exact))
    for members in masked.members.values():  # tied convolutions keep one set of channels
        assert all(torch.equal(kept[index], kept[members[0]]) for index in members)
    rounded = extract_resnet(network, masks, round_to=8)
    # The same network with the channels rounding dropped zeroed: the channels rounding added
    # have zero masks, so the two give the same logits.
    restricted = []
    for mask, channels in zip(masks, kept):
        keep = torch.zeros_like(mask)
        keep[channels] = 1.0
        restricted.append(mask * keep)
    with torch.no_grad():
        torch.testing.assert_close(rounded(images), extract_resnet(network, restricted)(images), rtol=1e-4, atol=1e-5)
    widths = [rounded.conv1.out_channels] + [c.out_channels for b in rounded.blocks for c in (b.conv1, b.conv2)]
    assert widths == [len(channels) for channels in kept]


@pytest.mark.parametrize("round_to, target, slack", [(8, 0.72, 0.04), (1, 0.814, 0.005), (1, 0.649, 0.005)])
def test_static_criteria_round_their_counts_and_fill_the_budget(round_to, target, slack):
    # The uniform keep fraction alone stopped at 0.45 of the MACs for a 0.72 budget (a 16-channel
    # group keeps 8 or 16): MaskOffset's rounded run then met static criteria at far fewer FLOPs.
    # Without rounding it stopped at 0.767 for 0.814 and 0.631 for 0.649 (one channel of the
    # 16-channel residual stream is a sixteenth of every stage-1 convolution).
    torch.manual_seed(0)
    network = cifar_resnet("resnet20").eval()
    full = count_macs(network, (3, 32, 32))
    scores = [norm.weight.detach().abs() + torch.rand(len(norm.weight)) for _, norm in conv_bn_pairs(network)]
    masks, macs = masks_for_macs(network, scores, target * full, (3, 32, 32), round_to=round_to)
    assert all(int(mask.sum()) % round_to == 0 for mask in masks)
    assert (target - slack) * full < macs <= target * full
    assert macs == count_macs(extract_resnet(network, masks, round_to), (3, 32, 32))


def test_the_env_counts_and_extracts_the_rounded_network(fake_data_dir):
    env = make(fake_data_dir, round_to=8, interacting_step=1.0).unwrapped
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(np.ones(1, np.float32))
        done = terminated or truncated
    pruned = env.pruned_model()
    assert all(c.out_channels % 8 == 0 for b in pruned.blocks for c in (b.conv1, b.conv2))
    assert info["macs"] == count_macs(pruned, (3, 32, 32)) < info["macs_full"]
    with pytest.raises(ValueError, match="round_to"):
        make(fake_data_dir, round_to=0)
