import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import cheap_kwargs

from prune_gym.baselines.alphablend import handover_step, nearest_action
from prune_gym.baselines.registry import get_policy, policies_for
from prune_gym.envs.alphablend import FINISH, HOLD, LARGE, MEDIUM, SMALL
from prune_gym.models import BACKBONES, GroupedCNN
from prune_gym.models.blended_cnn import BlendedCNN, BlendLayer, branch_params, total_parameters
from prune_gym.pruning.counting import count_macs, count_params

ID = "AlphaBlend-CIFAR10-v1"


def make(fake_data_dir, env_id=ID, **overrides):
    return gym.make(env_id, **{**cheap_kwargs(env_id, fake_data_dir), **overrides}).unwrapped


def dense_backbone(name: str = "cnn4", in_channels: int = 3) -> torch.nn.Sequential:
    torch.manual_seed(0)
    backbone = GroupedCNN(BACKBONES[name], in_channels, 10)
    backbone.train()
    backbone(torch.randn(16, in_channels, 32, 32))  # non-trivial BN statistics
    return backbone.eval().to_dense()


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_handed_over_network_has_35_percent_of_the_parameters(backbone):
    original = dense_backbone(backbone)
    blended = BlendedCNN(original, keep_params=0.35)
    pruned = blended.handover()
    ratio = total_parameters(pruned) / total_parameters(original)  # keep_params' own measure
    assert ratio == pytest.approx(0.35, abs=0.002), ratio
    assert not any(isinstance(module, BlendLayer) for module in pruned.modules())
    assert count_macs(pruned, (3, 32, 32)) < count_macs(original, (3, 32, 32))
    shapes = [(m.original[0].in_channels, m.original[0].out_channels) for m in blended.blend_layers()]
    branch_total = sum(total_parameters(m.branch) for m in blended.blend_layers())
    assert branch_total == sum(branch_params(i, o, r) for (i, o), r in zip(shapes, blended.ranks))


def test_blend_is_alpha_original_plus_one_minus_alpha_branch_and_handover_is_exactly_the_branch():
    original = dense_backbone()
    blended = BlendedCNN(original, seed=3).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(blended(x), original(x))  # α = 1: the trained network exactly
        layer = blended.blend_layers()[1]
        h = torch.randn(2, layer.original[0].in_channels, 16, 16)
        blended.set_alpha(0.3)
        torch.testing.assert_close(layer(h), 0.3 * layer.original(h) + 0.7 * layer.branch(h), rtol=0, atol=0)
        blended.set_alpha(0.0)
        pruned = blended.handover().eval()
        assert torch.equal(pruned(x), blended(x))
    # Branch conv weights are He-initialised: std ≈ sqrt(2 / fan_in).
    conv = blended.blend_layers()[3].branch[0]
    fan_in = conv.in_channels * 9
    assert float(conv.weight.detach().std()) == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    with pytest.raises(ValueError, match="keep_params"):
        BlendedCNN(original, keep_params=0.001)


def test_env_accounting_lr_schedule_and_handover(fake_data_dir):
    env = make(fake_data_dir, budget_steps=4)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    # At α = 1 only the original runs: the counter counts what the network computes.
    assert info["alpha"] == 1.0 and info["macs"] == info["macs_full"] and info["params"] == info["params_full"]
    env._optimizer.param_groups[0]["lr"] = 1e-5  # as if reduced on a plateau
    obs, reward, terminated, _, info = env.step(HOLD)
    assert info["lr"] <= 1e-5 and reward == pytest.approx(-0.01) and not terminated
    obs, reward, terminated, _, info = env.step(MEDIUM)
    assert info["alpha"] == pytest.approx(0.8) and info["lr"] == 1e-3  # reset when α drops
    assert info["macs"] == count_macs(env.model, (3, 32, 32)) > info["macs_full"]  # both parts run
    assert info["params"] > info["params_full"]
    assert obs[0] == pytest.approx(0.8) and obs[1] == pytest.approx(1 / 4) and obs[-1] == pytest.approx(2 / 4)
    obs, reward, terminated, _, info = env.step(FINISH)
    assert terminated and info["alpha"] == 0.0 and info["steps_used"] == 4  # fine-tuned with the rest
    assert info["params"] == count_params(env.model, (3, 32, 32))
    assert info["params"] / info["params_full"] == pytest.approx(0.35, abs=0.003)
    assert reward == pytest.approx(-info["cross_entropy"])
    assert {"test_accuracy", "test_loss", "test_accuracy_original"} <= set(info)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(HOLD)


def test_budget_spent_at_positive_alpha_hands_over_without_finetuning(fake_data_dir):
    env = make(fake_data_dir, budget_steps=2)
    env.reset(seed=0)
    env.step(LARGE)
    obs, reward, terminated, truncated, info = env.step(HOLD)
    assert truncated and not terminated and info["alpha"] == 0.0 and info["steps_used"] == 2
    assert reward == pytest.approx(-0.01 - info["cross_entropy"])
    assert not any(isinstance(module, BlendLayer) for module in env.model.modules())


def test_v0_keeps_its_episode_end_a_spent_budget_terminates(fake_data_dir):
    env = make(fake_data_dir, "AlphaBlend-CIFAR10-v0", budget_steps=1)
    env.reset(seed=0)
    *_, terminated, truncated, info = env.step(SMALL)
    assert terminated and not truncated and info["alpha"] == 0.0


def test_regression_task_is_mean_squared_logit_error(fake_data_dir):
    env = make(fake_data_dir, task="regression")
    env.reset(seed=0)
    env.step(SMALL)
    images, labels = env.data.train_images[:8], env.data.train_labels[:8]
    loss, logits = env._loss_and_logits(images, labels)
    with torch.no_grad():
        targets = env.original(env._prepare(images))
    logits = logits.detach()
    assert loss.item() == pytest.approx(float(((logits - targets) ** 2).mean()), rel=1e-6)
    assert loss.item() != pytest.approx(float(((logits - targets) ** 2).sum(1).mean()), rel=1e-3)


def test_invalid_actions_are_clear_errors_and_masks_all_valid(fake_data_dir):
    env = make(fake_data_dir)
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True] * 5
    for bad in (5, -1, 0.5, "1"):
        with pytest.raises(ValueError, match=r"expected an integer in 0\.\.4"):
            env.step(bad)
    with pytest.raises(ValueError, match="task"):
        make(fake_data_dir, task="distill")
    with pytest.raises(ValueError, match="small_step"):
        make(fake_data_dir, small_step=0.5, medium_step=0.8)


def test_baselines_implement_the_stated_schedules(fake_data_dir):
    assert [p.name for p in policies_for(ID)] == ["exponential", "linear", "one-shot"]
    assert handover_step(30) == 20 and handover_step(1) == 1
    factors = {SMALL: 0.95, MEDIUM: 0.8, LARGE: 0.5}
    assert nearest_action(1.0, 0.95, factors) == SMALL and nearest_action(0.4, 0.2, factors) == LARGE
    assert nearest_action(0.5, 0.5, factors) == HOLD
    env = make(fake_data_dir, budget_steps=4)  # H = 2 blended steps, then α = 0 and 2 epochs of fine-tuning
    for name, expected_alphas in (("exponential", [0.95, 0.95 ** 2]), ("linear", [0.5, 0.5 * 0.5])):
        obs, info = env.reset(seed=0)
        policy = get_policy(ID, name).make(env)
        alphas = []
        while True:
            obs, reward, terminated, _, info = env.step(policy(obs, info))
            if terminated:
                break
            alphas.append(info["alpha"])
        assert alphas == pytest.approx(expected_alphas) and info["steps_used"] == 4, name
    obs, info = env.reset(seed=0)
    one_shot = get_policy(ID, "one-shot").make(env)
    assert one_shot(obs, info) == FINISH
    *_, terminated, _, info = env.step(FINISH)
    assert terminated and info["steps_used"] == 4 and info["cycle"] == 1


def test_compare_reports_the_unpruned_and_every_schedules_final_network(fake_data_dir, tmp_path):
    from prune_gym.baselines.compare import compare

    rows = compare(ID, seeds=1, out=tmp_path, env_kwargs=cheap_kwargs(ID, fake_data_dir))
    starts = [row for row in rows if row["cycle"] == 0 and not row["final"]]
    assert len({row["test_accuracy"] for row in starts}) == 1  # every schedule starts from the same network
    finals = [row for row in rows if row["final"]]
    assert [row["policy"] for row in finals] == ["exponential", "linear", "one-shot"]
    for row in finals:
        assert row["params"] / row["params_full"] == pytest.approx(0.35, abs=0.003)
        assert row["test_accuracy"] is not None
    assert "*(unpruned, cycle 0)*" in (tmp_path / "results.md").read_text()
