"""RNP's scripted policies, the vanilla narrow networks and the Pareto sweep's pieces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from prune_gym.baselines.registry import get_policy, policies_for
from prune_gym.baselines.rnp import vanilla_macs, vanilla_network, width_factor_for_macs
from prune_gym.evaluation import evaluate_rnp_policy, params_used, rnp_images
from prune_gym.models.grouped_cnn import get_backbone_spec
from prune_gym.pretraining import PretrainBudget

SYNTHETIC = {"pretrain_steps": 2, "device": "cpu"}


def test_rnp_policies_are_registered():
    names = [policy.name for policy in policies_for("RNP-CIFAR10-v0")]
    assert names == ["uniform-1", "uniform-2", "uniform-3", "uniform-4", "random"]
    with pytest.raises(ValueError, match="valid: uniform-1"):
        get_policy("RNP-CIFAR10-v0", "greedy")


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_uniform_policy_keeps_its_groups_everywhere(groups):
    env = gym.make("RNP-Synthetic-v0", **SYNTHETIC)
    env.reset(seed=0)
    unwrapped = env.unwrapped
    images, labels, _ = rnp_images(unwrapped, "test", None)
    decide = get_policy("RNP-Synthetic-v0", f"uniform-{groups}").make(unwrapped).decide_batch
    figures = evaluate_rnp_policy(unwrapped, decide, images, labels, unwrapped, latency=False)
    assert figures["groups_distribution"]["layer1"][groups - 1] == 1.0
    expected = unwrapped.runtime.backbone.to_dense(groups)
    from prune_gym.pruning.counting import count_macs, trace_layer_costs

    shape = unwrapped.dataset.image_shape
    assert figures["mean_macs"] == count_macs(expected, shape)
    # "params" are the conv/linear weights used (BN is folded into the convs at run time).
    assert figures["mean_params"] == sum(cost.params() for cost in trace_layer_costs(expected, shape))
    # An episode with the same actions charges the same MACs.
    obs, info = env.reset(seed=1)
    done = False
    while not done:
        obs, _, done, _, info = env.step(groups - 1)
    assert info["macs"] == figures["mean_macs"] and info["params"] == figures["mean_params"]


def test_evaluation_charges_the_decision_functions_own_macs():
    env = gym.make("RNP-Synthetic-v0", **SYNTHETIC).unwrapped
    env.reset(seed=0)
    images, labels, _ = rnp_images(env, "test", None)

    def decide(obs):
        return np.where(obs[:, 0] > obs[:, 1], 0, 3)  # a data-dependent rule

    decide.decision_macs = 1000
    figures = evaluate_rnp_policy(env, decide, images, labels, env, latency=False)
    assert figures["decision_macs"] == 1000
    assert figures["mean_macs"] == pytest.approx(figures["backbone_macs"] + 1000)
    assert figures["macs_ratio"] == pytest.approx(figures["macs_full"] / figures["mean_macs"])
    assert figures["macs_ratio_backbone"] == pytest.approx(figures["macs_full"] / figures["backbone_macs"])
    assert figures["macs_ratio"] < figures["macs_ratio_backbone"]
    per_class = figures["macs_per_class"]
    counts = np.bincount(labels.numpy())
    assert set(per_class) == set(np.flatnonzero(counts).tolist())
    assert sum(per_class[c] * counts[c] for c in per_class) / counts.sum() == pytest.approx(figures["mean_macs"])
    assert figures["macs_std"] > 0  # the rule picks both widths on these images
    # A scripted rule without the attribute costs nothing.
    del decide.decision_macs
    assert evaluate_rnp_policy(env, decide, images, labels, env, latency=False)["decision_macs"] == 0


def test_random_policy_uses_every_width():
    env = gym.make("RNP-Synthetic-v0", **SYNTHETIC)
    env.reset(seed=0)
    decide = get_policy("RNP-Synthetic-v0", "random").make(env.unwrapped).decide_batch
    assert set(decide(np.zeros((400, 4), np.float32)).tolist()) == {0, 1, 2, 3}


def test_params_used_follows_mixed_choices():
    env = gym.make("RNP-Synthetic-v0", **SYNTHETIC).unwrapped
    env.reset(seed=0)
    runtime = env.runtime
    obs, info = env.reset(seed=0)
    actions = [0, 3, 1]
    for action in actions:
        obs, _, done, _, info = env.step(action)
    assert params_used(runtime, np.array([[a + 1 for a in actions]]))[0] == info["params"]


def test_vanilla_width_factor_matches_macs():
    assert get_backbone_spec("cnn4-w0.5").widths == (16, 32, 64, 128)
    costs = [vanilla_macs("cnn4", f, (3, 32, 32), 10) for f in (0.3, 0.5, 0.8, 1.0)]
    assert costs == sorted(costs) and costs[-1] == vanilla_macs("cnn4", 1.0, (3, 32, 32), 10) > 15e6
    factor = width_factor_for_macs("cnn4", 5.0e6, (3, 32, 32), 10)
    assert abs(vanilla_macs("cnn4", factor, (3, 32, 32), 10) - 5.0e6) < 0.2e6


def test_vanilla_network_trains_a_plain_narrow_cnn(fake_data_dir):
    figures = vanilla_network("cifar10", "cnn4", 0.5, str(fake_data_dir), device="cpu", budget=PretrainBudget(steps=2))
    assert figures["backbone"] == "cnn4-w0.5" and 0.0 <= figures["accuracy"] <= 1.0
    assert figures["macs"] == vanilla_macs("cnn4", 0.5, (3, 32, 32), 10)


def test_vanilla_networks_get_the_backbones_whole_recipe(monkeypatch):
    """Regression: the sweep passed only the env's pretrain_steps, so a backbone pretrained with
    another rate, bf16 or Cutout was compared with narrow networks trained by the default recipe."""
    import prune_gym.baselines.rnp as rnp_baselines
    from prune_gym.baselines.rnp_pareto import vanilla_rows

    requests = []

    def fake_vanilla_network(dataset, base, factor, data_root, seed, device, budget, val_fraction):
        requests.append((budget, val_fraction))
        return {"accuracy": 0.5, "cross_entropy": 1.0, "macs": 1e6, "params": 10}

    monkeypatch.setattr(rnp_baselines, "vanilla_network", fake_vanilla_network)
    kwargs = {**SYNTHETIC, "pretrain_steps": 1, "pretrain_lr": 0.2, "pretrain_batch_size": 8,
              "pretrain_precision": "bf16", "pretrain_cutout": 8, "val_fraction": 0.2}
    backbone = gym.make("RNP-Synthetic-v0", **kwargs).unwrapped.settings.backbone_request()
    rows = vanilla_rows("RNP-Synthetic-v0", kwargs, [1e5], seeds=[0, 1])
    assert [row["accuracy_per_seed"] for row in rows] == [[0.5, 0.5]]
    assert requests == [(backbone.budget, 0.2)] * 2
    assert backbone.budget == PretrainBudget(steps=1, lr=0.2, batch_size=8, precision="bf16", cutout=8)


def test_compare_runs_rnp_policies_and_a_trained_agent_over_the_test_split(tmp_path):
    from prune_gym.agents.runs import train_run
    from prune_gym.baselines.compare import compare

    run_dir = train_run("RNP-Synthetic-v0", "rnp-dqn", timesteps=96, out=tmp_path / "run", env_kwargs=SYNTHETIC,
                        hyperparams={"num_envs": 16, "learning_starts": 16, "batch_size": 8})
    rows = compare("RNP-Synthetic-v0", "uniform-1,uniform-4", [str(run_dir)], seeds=1, out=tmp_path / "cmp",
                   env_kwargs=SYNTHETIC)
    by_policy = {row["policy"]: row for row in rows}
    assert set(by_policy) == {"uniform-1", "uniform-4", "rnp-dqn:run"}
    assert by_policy["uniform-4"]["macs_fraction"] == 1.0 and by_policy["uniform-1"]["macs_fraction"] < 0.3
    assert all(0.0 <= row["test_accuracy"] <= 1.0 and row["final"] for row in rows)
    assert {"results.csv", "results.md", "pareto.png"} <= {path.name for path in (tmp_path / "cmp").iterdir()}


def test_sweep_table_shows_the_vanilla_seed_spread(tmp_path):
    from prune_gym.baselines.rnp_pareto import write_table

    reference = {"images": 517, "accuracy_full": 0.75, "macs_full": 15e6}
    rows = [{"method": "vanilla-w0.5", "mean_macs": 4e6, "accuracy": 0.7, "accuracy_std": 0.0125},
            {"method": "uniform-4", "mean_macs": 15e6, "accuracy": 0.75}]
    write_table(rows, reference, tmp_path / "table.md")
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert "| vanilla-w0.5 |  | 70.00 ± 1.25 % | -5.00 | 4.00 M | 3.75× |  |" in lines
    assert "| uniform-4 |  | 75.00 % | +0.00 | 15.00 M | 1.00× |  |" in lines


def test_sweep_plot_names_the_env_and_test_images_not_a_fixed_data_copy(tmp_path):
    """The plot's title once said "the CIFAR-10 subset" whatever data the sweep ran on."""
    from prune_gym.baselines.rnp_pareto import plot, plot_title

    reference = {"images": 7500, "accuracy_full": 0.8, "macs_full": 15e6, "mean_macs": 15e6, "accuracy": 0.8,
                 "kind": "scripted", "group": "uniform"}
    title = plot_title("RNP-CIFAR10-v0", reference)
    assert title == "RNP sweep on RNP-CIFAR10-v0: 7,500 test images" and "subset" not in title
    plot([reference], reference, tmp_path / "pareto.png", title)
    assert (tmp_path / "pareto.png").stat().st_size > 0
