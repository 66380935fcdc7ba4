"""The custom DQN's parts, exact resume, the SB3 runners and the train/evaluate command line."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from prune_gym.agents.dqn import DQNConfig, DQNTrainer
from prune_gym.agents.dqn_common import bootstrap_values, epsilon_at, epsilon_greedy, update_target
from prune_gym.agents.rnp_dqn import (
    EpisodeReplay,
    RNPDQNConfig,
    RNPDQNTrainer,
    RNPQNetwork,
    episode_td_loss,
    make_training_env,
)
from prune_gym.agents.runs import (
    NotARunError,
    custom_dqn_for,
    load_agent_policy,
    load_hyperparams,
    read_config,
    train_run,
)
from prune_gym.cli import main as cli_main

SYNTHETIC = {"pretrain_steps": 2, "device": "cpu"}
TINY_DQN = {"num_envs": 16, "learning_starts": 32, "batch_size": 16, "finetune_every": 3, "finetune_steps": 2,
            "checkpoint_every": 2, "updates_per_iteration": 2, "hidden_size": 16}


# -- exploration -----------------------------------------------------------------------------


@pytest.mark.parametrize("eps_min", [0.0, 0.05, 0.5])
def test_epsilon_stays_within_its_bounds(eps_min):
    config = RNPDQNConfig(eps_min=eps_min, exploration_fraction=0.25)
    values = [epsilon_at(progress, config) for progress in np.linspace(-0.5, 2.0, 101)]
    assert min(values) == pytest.approx(eps_min) and max(values) == pytest.approx(1.0)
    assert all(eps_min <= value <= 1.0 for value in values)
    assert epsilon_at(0.125, config) == pytest.approx(1.0 + 0.5 * (eps_min - 1.0))


@pytest.mark.parametrize("config_class", [RNPDQNConfig, DQNConfig])
@pytest.mark.parametrize("bad", [{"eps_min": -0.1}, {"eps_min": 0.5, "eps_start": 0.4}, {"eps_start": 1.5},
                                 {"exploration_fraction": 0.0}, {"tau": 0.0}, {"batch_size": 0}, {"lr": "abc"},
                                 {"lr": -1e-3}, {"timesteps": 1.5}, {"double_dqn": 1}, {"gamma": 1.5}])
def test_config_rejects_invalid_values_naming_them(config_class, bad):
    with pytest.raises(ValueError, match=list(bad)[-1]):
        config_class(**bad)
    with pytest.raises(ValueError, match="valid"):
        config_class.from_dict({"learning_rate": 1.0})


def test_each_agent_has_only_its_own_hyperparameters():
    assert RNPDQNConfig(timesteps=2e5).timesteps == 200_000  # an integral float is an integer
    with pytest.raises(ValueError, match=r"Unknown rnp-dqn \(MLP agent.*\['finetune_every'\]"):
        DQNConfig.from_dict({"finetune_every": 3})
    with pytest.raises(ValueError, match=r"Unknown rnp-dqn \(RNP agent.*\['train_frequency'\]"):
        RNPDQNConfig.from_dict({"train_frequency": 3})


def test_epsilon_greedy_explores_every_action_including_keep_all():
    rng = np.random.default_rng(0)
    q_values = np.tile(np.array([[0.0, 5.0, 1.0, 2.0]], dtype=np.float32), (4000, 1))
    explored = epsilon_greedy(q_values, 1.0, rng)
    counts = np.bincount(explored, minlength=4)
    assert counts.min() > 800, counts  # uniform over all four, "keep all" (3) included
    assert (epsilon_greedy(q_values, 0.0, rng) == 1).all()


# -- network, loss, target, replay -----------------------------------------------------------


def test_rnp_q_network_is_one_network_shared_across_layers():
    torch.manual_seed(0)
    network = RNPQNetwork([32, 64, 128], k=4, hidden_size=16)
    assert len(network.encoders) == 3 and isinstance(network.gru, torch.nn.GRUCell)
    assert network.decoder.out_features == 4
    obs = torch.rand(5, 3, 256 + 3 + 1)
    sequence = network(obs)
    hidden = None
    for index in range(3):
        q, hidden = network.step(obs[:, index], index, hidden)
        torch.testing.assert_close(sequence[:, index], q)
    # Padding beyond a layer's width is never read.
    padded = obs.clone()
    padded[:, 0, 32:256] = 7.0
    torch.testing.assert_close(network(padded)[:, 0], sequence[:, 0])


def test_rnp_q_network_counts_its_own_macs_per_image():
    network = RNPQNetwork([3, 5], k=2, hidden_size=4)
    # Per decision: encoder (width + 1)·4, GRU cell 3·(4·4 + 4·4) = 96, decoder 4·2 = 8.
    assert network.macs_per_image() == (4 * 4 + 96 + 8) + (6 * 4 + 96 + 8) == 248
    from prune_gym.agents.rnp_dqn import RecurrentDecider
    from prune_gym.pruning.runtime import decision_macs

    assert decision_macs(RecurrentDecider(network, max_width=5)) == 248


def test_double_dqn_uses_the_online_argmax():
    online = torch.tensor([[1.0, 3.0, 2.0]])
    target = torch.tensor([[10.0, 0.5, 20.0]])
    assert bootstrap_values(online, target, double_dqn=True).item() == 0.5
    assert bootstrap_values(online, target, double_dqn=False).item() == 20.0


def test_masked_epsilon_greedy_acts_and_explores_among_valid_actions_only():
    rng = np.random.default_rng(0)
    q_values = np.tile(np.array([[0.0, 5.0, 1.0, 2.0]], dtype=np.float32), (3000, 1))
    masks = np.tile(np.array([[True, False, True, True]]), (3000, 1))
    counts = np.bincount(epsilon_greedy(q_values, 1.0, rng, masks), minlength=4)
    assert counts[1] == 0 and counts[[0, 2, 3]].min() > 800, counts
    assert (epsilon_greedy(q_values, 0.0, rng, masks) == 3).all()  # the best valid action, not the invalid 1


def test_masked_bootstrap_maximises_over_the_valid_next_actions():
    online = torch.tensor([[1.0, 3.0, 2.0]])
    target = torch.tensor([[10.0, 0.5, 20.0]])
    valid = torch.tensor([[True, False, True]])
    assert bootstrap_values(online, target, double_dqn=True, next_masks=valid).item() == 20.0
    first_two = torch.tensor([[True, True, False]])
    assert bootstrap_values(online, target, double_dqn=False, next_masks=first_two).item() == 10.0


def test_td_loss_is_finite_at_a_terminal_state_without_valid_actions():
    from prune_gym.agents.dqn import QNetwork, td_loss

    network = QNetwork(2, 3, hidden_size=4)
    batch = {"obs": torch.zeros(1, 2), "next_obs": torch.zeros(1, 2), "actions": torch.tensor([1]),
             "rewards": torch.tensor([1.0]), "terminated": torch.tensor([1.0]), "discounts": torch.tensor([0.99]),
             "next_masks": torch.zeros(1, 3, dtype=torch.bool)}
    assert torch.isfinite(td_loss(network, network, batch, double_dqn=True))


class HalfMaskedEnv(gym.Env):
    """A Discrete(4) env whose odd actions are never valid, the refused 1 paying most (a trap); it
    counts the invalid actions it is given."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Discrete(4)

    def __init__(self):
        self.invalid, self.t = 0, 0

    def action_masks(self):
        return np.array([True, False, True, False])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.invalid += int(action % 2 == 1)
        self.t += 1
        reward = 1.0 if action == 1 else 0.1 * action
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), reward, self.t >= 5, False, {}


@pytest.mark.parametrize("masked", [True, False])
def test_a_masked_mlp_dqn_never_takes_an_invalid_action(masked):
    env = HalfMaskedEnv()
    config = DQNConfig(timesteps=300, learning_starts=20, batch_size=8, hidden_size=8, action_masks=masked)
    trainer = DQNTrainer(env, config, seed=0)
    trainer.train()
    from prune_gym.agents.dqn import greedy_policy

    policy = greedy_policy(trainer.learner.online, env if masked else None)
    greedy = [policy(np.array(obs, dtype=np.float32), {}) for obs in np.random.default_rng(0).uniform(-1, 1, (50, 2))]
    if masked:
        assert env.invalid == 0 and set(greedy) <= {0, 2}
    else:  # without masks the same agent explores, and is drawn to, the refused actions
        assert env.invalid > 0


@pytest.mark.parametrize("terminated", [True, False])
def test_n_step_transitions_sum_discounted_rewards_and_bootstrap_after_them(terminated):
    from prune_gym.agents.dqn import NStepBuffer, TransitionReplay

    replay = TransitionReplay(10, 1, 2, gamma=0.5)
    buffer = NStepBuffer(replay, n=3, gamma=0.5)
    for step, reward in enumerate([1.0, 2.0, 3.0, 4.0]):
        over = step == 3
        buffer.add(np.array([step], np.float32), 0, reward, np.array([step + 1], np.float32), terminated and over,
                   None, over)
        if step == 2:
            assert replay.size == 1  # s0 waited for three rewards
    assert replay.size == 4 and not buffer.pending
    assert replay.rewards[:4].tolist() == [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3 + 0.25 * 4, 3 + 0.5 * 4, 4.0]
    assert replay.discounts[:4].tolist() == [0.125, 0.125, 0.25, 0.5]
    assert replay.next_obs[:4, 0].tolist() == [3, 4, 4, 4]
    assert replay.terminated[:4].tolist() == [0.0] + [float(terminated)] * 3


def test_a_killed_and_resumed_n_step_run_reaches_the_same_weights(tmp_path):
    kwargs = {"timesteps": 240, "seed": 1, "hyperparams": {"learning_starts": 16, "batch_size": 8, "n_step": 3,
                                                            "gamma": 0.9, "checkpoint_every": 50, "hidden_size": 16}}
    whole = train_run("CartPole-v1", "rnp-dqn", out=tmp_path / "whole", **kwargs)
    killed = train_run("CartPole-v1", "rnp-dqn", out=tmp_path / "killed",
                       callback=lambda iteration, row: iteration < 120, **kwargs)
    train_run(out=killed, resume=True)
    whole_final = torch.load(whole / "final_model.pt", weights_only=True)
    resumed_final = torch.load(killed / "final_model.pt", weights_only=True)
    for key, value in whole_final["online"].items():
        torch.testing.assert_close(resumed_final["online"][key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="n_step"):
        DQNConfig(n_step=0)


def test_runs_saved_before_action_masks_load_unmasked():
    assert DQNConfig.from_saved({}).action_masks is False  # as they were trained
    assert DQNConfig.from_dict({}).action_masks is True  # a new run's default
    from prune_gym.agents.dqn import TransitionReplay

    old = TransitionReplay(4, 2, 3)
    old.add(np.zeros(2), 1, 0.5, np.ones(2), False, None, 0.99)
    state = {name: value for name, value in old.state_dict().items() if name != "next_masks"}  # an older checkpoint
    resumed = TransitionReplay(4, 2, 3)
    resumed.load_state_dict(state)
    assert resumed.size == 1 and resumed.next_masks.all() and resumed.rewards[0] == 0.5


def test_episode_targets_bootstrap_inside_the_episode_and_stop_at_its_end():
    torch.manual_seed(0)
    network = RNPQNetwork([4, 4], k=2, hidden_size=8)
    obs = torch.rand(3, 2, 4 + 2 + 1)
    batch = {"obs": obs, "actions": torch.tensor([[0, 1]] * 3), "rewards": torch.tensor([[0.5, -1.0]] * 3)}
    q = network(obs).detach()
    expected_first = 0.5 + 0.9 * q[:, 1].max(1).values
    expected = torch.stack([expected_first, torch.full((3,), -1.0)], 1)
    taken = q.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
    loss = episode_td_loss(network, network, batch, gamma=0.9, double_dqn=True)
    torch.testing.assert_close(loss, torch.nn.functional.smooth_l1_loss(taken, expected))


def test_target_update_copies_or_averages():
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = target.weight.detach().clone()
    update_target(online, target, 0.5)
    torch.testing.assert_close(target.weight, (before + online.weight) / 2)
    update_target(online, target, 1.0)
    torch.testing.assert_close(target.weight, online.weight)


def test_episode_replay_wraps_around_and_round_trips():
    replay = EpisodeReplay(capacity=5, length=2, obs_size=3)
    for start in range(0, 8, 4):
        obs = np.arange(start, start + 4, dtype=np.float32)[:, None, None] * np.ones((4, 2, 3), np.float32)
        replay.add(obs, np.zeros((4, 2), np.int64), np.zeros((4, 2), np.float32))
    assert replay.size == 5 and replay.position == 3
    assert sorted(replay.obs[:, 0, 0].tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    copy = EpisodeReplay(5, 2, 3)
    copy.load_state_dict(replay.state_dict())
    np.testing.assert_array_equal(copy.obs, replay.obs)
    assert (copy.position, copy.size) == (3, 5)


# -- training and exact resume ---------------------------------------------------------------


def test_rnp_dqn_trains_on_the_native_vector_env_and_fine_tunes_the_backbone():
    config = RNPDQNConfig(timesteps=16 * 3 * 4, **TINY_DQN)
    env = make_training_env("RNP-Synthetic-v0", SYNTHETIC, config)
    assert type(env).__name__ == "RNPVectorEnv" and env.num_envs == TINY_DQN["num_envs"]
    trainer = RNPDQNTrainer(env, config, seed=0)
    rows = trainer.train()
    assert len(rows) == 4 and trainer.learner.updates > 0
    assert env.backbone_state_dict() is not None  # the alternating phase fine-tuned the backbone
    assert any("finetune_val_accuracy" in row for row in rows)
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["macs"] > 0 for row in rows)


def test_rnp_agent_initial_weights_depend_on_the_seed_alone(monkeypatch):
    """Loading a backbone reseeds torch; the agent seeds after it, so neither the cache state (a
    fresh process reads the disk cache, a later run reuses this process's copy) nor the load sets
    the network's initial weights — before, every seed started from the same weights."""
    from prune_gym import pretraining

    config = RNPDQNConfig(timesteps=48, **TINY_DQN)

    def initial_weights(seed, fresh_process):
        if fresh_process:
            monkeypatch.setattr(pretraining, "_PRETRAINED", {})
        trainer = RNPDQNTrainer(make_training_env("RNP-Synthetic-v0", SYNTHETIC, config), config, seed=seed)
        return trainer.learner.online.decoder.weight.detach().clone()

    first = initial_weights(0, fresh_process=True)
    torch.testing.assert_close(initial_weights(0, fresh_process=False), first, rtol=0, atol=0)
    assert not torch.equal(initial_weights(1, fresh_process=True), first)


def _final_state(run_dir):
    state = torch.load(run_dir / "final_model.pt", weights_only=True)  # run files hold tensors and plain data only
    checkpoint = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    return state, checkpoint


def test_a_killed_and_resumed_run_reaches_the_same_weights(tmp_path):
    hyperparams = dict(TINY_DQN)
    kwargs = {"timesteps": 16 * 3 * 6, "seed": 3, "env_kwargs": SYNTHETIC, "hyperparams": hyperparams}
    whole = train_run("RNP-Synthetic-v0", "rnp-dqn", out=tmp_path / "whole", **kwargs)
    # A "kill" after iteration 5: the last checkpoint is from iteration 4, iteration 5 is lost.
    killed = train_run("RNP-Synthetic-v0", "rnp-dqn", out=tmp_path / "killed",
                       callback=lambda iteration, row: iteration < 5, **kwargs)
    assert not (killed / "final_model.pt").exists()
    assert torch.load(killed / "checkpoints" / "latest.pt", weights_only=True)["iteration"] == 4
    train_run("", "", out=killed, resume=True)
    (whole_final, whole_checkpoint), (resumed_final, resumed_checkpoint) = _final_state(whole), _final_state(killed)
    for name in ("online",):
        for key, value in whole_final[name].items():
            torch.testing.assert_close(resumed_final[name][key], value, rtol=0, atol=0)
    for key, value in whole_final["backbone"].items():
        torch.testing.assert_close(resumed_final["backbone"][key], value, rtol=0, atol=0)
    for key, value in whole_checkpoint["target"].items():
        torch.testing.assert_close(resumed_checkpoint["target"][key], value, rtol=0, atol=0)
    assert whole_checkpoint["metrics"] == resumed_checkpoint["metrics"]
    assert (whole / "metrics.csv").read_text() == (killed / "metrics.csv").read_text()


def test_train_and_evaluate_command_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    env_kwargs = ["pretrain_steps=2", "device=cpu"]
    cli_main(["train", "RNP-Synthetic-v0", "--algo", "rnp-dqn", "--timesteps", "192", "--out", str(run_dir),
              "--env-kwargs", *env_kwargs, "--hyperparams", "num_envs=16", "learning_starts=32", "batch_size=16"])
    assert {"config.json", "metrics.csv", "final_model.pt", "checkpoints", "tb"} <= {p.name for p in run_dir.iterdir()}
    config = read_config(run_dir)
    assert config["hyperparams"]["num_envs"] == 16 and config["env_kwargs"]["pretrain_steps"] == 2
    cli_main(["evaluate", str(run_dir), "--json", str(tmp_path / "figures.json")])
    figures = json.loads((tmp_path / "figures.json").read_text())
    for key in ("accuracy", "accuracy_full", "mean_macs", "macs_full", "macs_ratio", "latency_full_ms",
                "latency_pruned_ms", "groups_distribution"):
        assert key in figures
    assert figures["macs_ratio"] >= 1.0 and figures["mean_macs"] <= figures["macs_full"]
    for fractions in figures["groups_distribution"].values():
        assert sum(fractions) == pytest.approx(1.0)


def test_evaluate_on_other_images(tmp_path, fake_data_dir):
    from tests.conftest import write_fake_npz

    run_dir = train_run("RNP-MNIST-v0", "rnp-dqn", timesteps=96, out=tmp_path / "run",
                        env_kwargs={"pretrain_steps": 2, "device": "cpu", "data_root": str(fake_data_dir)},
                        hyperparams={"num_envs": 16, "learning_starts": 16, "batch_size": 8})
    other = write_fake_npz(tmp_path / "other.npz", "mnist", test_size=40)
    from prune_gym.agents.evaluate import evaluate_run

    figures = evaluate_run(run_dir, eval_data=str(other))
    assert figures["images"] == 40 and "other.npz" in figures["evaluated_on"]


# -- errors ----------------------------------------------------------------------------------


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="RNP-CIFAR10-v0"):
        train_run("RNP-Nope-v0", "rnp-dqn", out=tmp_path / "a")
    with pytest.raises(ValueError, match="valid: rnp-dqn"):
        train_run("RNP-Synthetic-v0", "reinforce", out=tmp_path / "b")
    with pytest.raises(NotARunError, match="not a prune-gym run"):
        read_config(tmp_path)
    with pytest.raises(SystemExit, match="not a prune-gym run"):
        cli_main(["evaluate", str(tmp_path)])
    with pytest.raises(ValueError, match="Discrete action space"):
        train_run("Pendulum-v1", "rnp-dqn", timesteps=10, out=tmp_path / "c")
    with pytest.raises(ValueError, match="needs a Discrete action space.*sac, td3"):
        train_run("Pendulum-v1", "dqn", timesteps=10, out=tmp_path / "d")
    with pytest.raises(ValueError, match="needs a Box action space.*dqn, ppo, a2c, rnp-dqn"):
        train_run("CartPole-v1", "sac", timesteps=10, out=tmp_path / "e")
    with pytest.raises(ValueError, match="ppo_mask acts only among.*CartPole-v1 has no action_masks.*dqn, ppo, a2c"):
        train_run("CartPole-v1", "ppo_mask", timesteps=10, out=tmp_path / "g")
    assert not (tmp_path / "g").exists()
    train_run("CartPole-v1", "rnp-dqn", timesteps=40, out=tmp_path / "f", hyperparams={"learning_starts": 8,
                                                                                     "batch_size": 8})
    with pytest.raises(FileExistsError, match="--resume"):
        train_run("CartPole-v1", "rnp-dqn", timesteps=40, out=tmp_path / "f")


def test_hyperparams_follow_the_rl_zoo_layout():
    default = load_hyperparams("ppo", "CartPole-v1")
    rnp = load_hyperparams("ppo", "RNP-CIFAR10-v0", {"n_epochs": 7})
    assert default["n_envs"] == 4 and rnp["n_envs"] == 256 and rnp["n_epochs"] == 7
    assert load_hyperparams("rnp-dqn", "prune_gym:RNP-Synthetic-v0")["num_envs"] == 64


# -- other envs and SB3 ----------------------------------------------------------------------


def test_custom_dqn_trains_an_mlp_on_any_discrete_env(tmp_path):
    run_dir = train_run("CartPole-v1", "rnp-dqn", timesteps=300, out=tmp_path / "run",
                        hyperparams={"learning_starts": 50, "batch_size": 16, "checkpoint_every": 100})
    policy = load_agent_policy(run_dir)
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    obs, info = env.reset(seed=0)
    assert policy.make(env)(obs, info) in (0, 1)
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"return", "length", "epsilon"} <= set(header)


@pytest.mark.parametrize("algo", ["ppo", "ppo_mask", "dqn", "a2c"])
def test_sb3_trains_on_the_batched_rnp_env_and_evaluates(tmp_path, algo):
    hyperparams = {"n_envs": 16, "learning_starts": 16} if algo == "dqn" else {"n_envs": 16}
    if algo in ("ppo", "ppo_mask"):
        hyperparams["batch_size"] = 48
    run_dir = train_run("RNP-Synthetic-v0", algo, timesteps=200, out=tmp_path / algo, env_kwargs=SYNTHETIC,
                        hyperparams=hyperparams)
    assert (run_dir / "final_model.zip").exists() and list((run_dir / "tb").iterdir())
    assert "correct" in (run_dir / "metrics.csv").read_text()
    from prune_gym.agents.evaluate import evaluate_run

    figures = evaluate_run(run_dir)
    # An agent that keeps every group costs more than the full backbone once its MLP is charged.
    assert 0.0 <= figures["accuracy"] <= 1.0 and figures["macs_ratio_backbone"] >= 1.0
    # The policy's MLP is charged: its linear layers that predict runs, once per decided layer.
    from prune_gym.agents.sb3 import SB3_ALGORITHMS

    model = SB3_ALGORITHMS[algo].load(run_dir / "final_model.zip", device="cpu")
    acting = model.q_net.q_net if algo == "dqn" else [*model.policy.mlp_extractor.policy_net, model.policy.action_net]
    per_decision = sum(layer.in_features * layer.out_features for layer in acting
                       if isinstance(layer, torch.nn.Linear))
    assert figures["decision_macs"] == 3 * per_decision > 0
    if algo == "ppo_mask":  # SB3Decider acts without masks because RNP's are all true (see its docstring)
        from prune_gym.envs.rnp import RNPVectorEnv
        from prune_gym.registry import get_entry

        env = RNPVectorEnv(num_envs=4, **{**get_entry("RNP-Synthetic-v0").kwargs, **SYNTHETIC})
        assert env.action_masks().all()
    assert figures["mean_macs"] == pytest.approx(figures["backbone_macs"] + figures["decision_macs"])


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_sb3_box_algorithms_and_resume(tmp_path, algo):
    hyperparams = {"learning_starts": 20, "batch_size": 16}
    run_dir = train_run("Pendulum-v1", algo, timesteps=60, out=tmp_path / algo, hyperparams=hyperparams)
    assert (run_dir / "final_model.zip").exists() and list((run_dir / "checkpoints").glob("model_*_steps.zip"))
    config = read_config(run_dir)
    config["hyperparams"]["n_timesteps"] = 80
    (run_dir / "config.json").write_text(json.dumps(config))
    train_run("", "", out=run_dir, resume=True)
    from prune_gym.agents.sb3 import SB3_ALGORITHMS

    assert SB3_ALGORITHMS[algo].load(run_dir / "final_model.zip").num_timesteps >= 80
    env = gym.make("Pendulum-v1")  # the loaded run acts with a Box action (an int() of it once broke compare)
    obs, info = env.reset(seed=0)
    action = load_agent_policy(run_dir).make(env)(obs, info)
    assert env.action_space.contains(np.asarray(action, dtype=np.float32).reshape(env.action_space.shape))
    env.step(action)


LAYERPRUNE = "LayerPrune-MNIST-v1"
TINY_PPO_MASK = {"n_steps": 4, "batch_size": 4, "n_epochs": 1}


@pytest.mark.parametrize("n_envs", [1, 2])  # DummyVecEnv; SubprocVecEnv (worker processes)
def test_ppo_mask_reads_each_sub_envs_masks_through_the_monitored_vec_env(fake_data_dir, n_envs):
    """``get_action_masks`` (MaskablePPO's and its eval callback's only way to the masks) passes
    VecMonitor and FillAccountingKeys and answers with each sub-env's own row."""
    from conftest import cheap_kwargs
    from sb3_contrib.common.maskable.utils import get_action_masks

    from prune_gym.agents.sb3 import make_sb3_env

    venv = make_sb3_env(LAYERPRUNE, cheap_kwargs(LAYERPRUNE, fake_data_dir), n_envs, seed=0)
    try:
        venv.reset()
        assert get_action_masks(venv).tolist() == [[True] * 4] * n_envs
        venv.step(np.array([2] + [0] * (n_envs - 1)))  # only the first sub-env removes layer 1
        assert get_action_masks(venv).tolist() == [[True, True, False, True]] + [[True] * 4] * (n_envs - 1)
    finally:
        venv.close()


def actions_refused(env, policy, seed=0):
    """One episode of ``policy(obs, info)``: for each step, whether the env refused its action as invalid."""
    obs, info = env.reset(seed=seed)
    refused, done = [], False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy(obs, info))
        refused.append(bool(info["invalid_action"]))
        done = terminated or truncated
    return refused


def test_a_ppo_mask_run_trains_from_the_command_line_and_acts_among_valid_actions_only(tmp_path, fake_data_dir,
                                                                                       monkeypatch):
    from conftest import cheap_kwargs
    from sb3_contrib import MaskablePPO

    from prune_gym.agents.sb3 import greedy_policy
    from prune_gym.envs.layerprune import LayerPruneEnv

    refused = []  # every step of the run's envs, training and evaluation alike (all in this process)
    original_step = LayerPruneEnv.step

    def recording_step(self, action):
        result = original_step(self, action)
        refused.append(bool(result[-1]["invalid_action"]))
        return result

    monkeypatch.setattr(LayerPruneEnv, "step", recording_step)
    env_kwargs = cheap_kwargs(LAYERPRUNE, fake_data_dir)
    run_dir = tmp_path / "run"
    cli_main(["train", LAYERPRUNE, "--algo", "ppo_mask", "--timesteps", "8", "--out", str(run_dir),
              "--env-kwargs", *(f"{key}={value}" for key, value in env_kwargs.items()),
              "--hyperparams", *(f"{key}={value}" for key, value in TINY_PPO_MASK.items())])
    assert read_config(run_dir)["algo"] == "ppo_mask" and (run_dir / "final_model.zip").exists()
    evaluated = np.load(run_dir / "eval" / "evaluations.npz")["timesteps"]
    assert len(evaluated) > 0 and len(refused) > 8  # the eval callback played episodes too
    # MaskablePPO sampled, and its eval callback acted, among valid actions only (a plain EvalCallback
    # repeats this seed's greedy removal and is refused).
    assert not any(refused)
    monkeypatch.undo()

    # A model drawn to action 1 (remove layer 0) above all: valid once, refused ever after.
    model = MaskablePPO.load(run_dir / "final_model.zip", device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(torch.tensor([2.0, 10.0, 0.0, 5.0]))
    model.save(run_dir / "final_model.zip")
    env = gym.make(LAYERPRUNE, **env_kwargs)
    assert actions_refused(env, load_agent_policy(run_dir).make(env)) == [False, False, False]
    # The same weights acting as a plain PPO policy does (no masks) repeat the refused removal.
    assert actions_refused(env, greedy_policy(model)) == [False, True, True]


def test_a_killed_ppo_mask_run_resumes_from_its_last_checkpoint(tmp_path, fake_data_dir, monkeypatch):
    from conftest import cheap_kwargs
    from sb3_contrib import MaskablePPO

    from prune_gym.agents import sb3

    flush = sb3.EpisodeMetricsCallback._on_rollout_end

    def killed_after_the_first_rollout(self):
        flush(self)
        raise KeyboardInterrupt  # as Ctrl-C between two rollouts

    monkeypatch.setattr(sb3.EpisodeMetricsCallback, "_on_rollout_end", killed_after_the_first_rollout)
    kwargs = {"timesteps": 8, "out": tmp_path / "run", "env_kwargs": cheap_kwargs(LAYERPRUNE, fake_data_dir),
              "hyperparams": TINY_PPO_MASK}
    with pytest.raises(KeyboardInterrupt):
        train_run(LAYERPRUNE, "ppo_mask", **kwargs)
    monkeypatch.undo()
    run_dir = kwargs["out"]
    assert not (run_dir / "final_model.zip").exists()
    assert sb3.checkpoint_timesteps(sb3.latest_checkpoint(run_dir)) == 4  # the first rollout's 4 steps
    train_run(out=run_dir, resume=True)
    model = MaskablePPO.load(run_dir / "final_model.zip", device="cpu")
    assert model.num_timesteps == 8 and sb3.checkpoint_timesteps(sb3.latest_checkpoint(run_dir)) == 8
    timesteps = [int(line.split(",")[0]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert timesteps == sorted(timesteps) and timesteps[-1] > 4  # the resumed run appended its episodes


def _hyperparameter_table(algo):
    import yaml

    from prune_gym.agents.runs import HYPERPARAMS_DIR

    return yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text())


@pytest.mark.parametrize("algo", ["rnp-dqn", "dqn", "ppo", "ppo_mask", "a2c", "sac", "td3"])
def test_hyperparameter_files_name_only_registered_ids(algo):
    import gymnasium as gym

    import prune_gym  # noqa: F401

    table = _hyperparameter_table(algo)
    assert ("default" in table) == (algo != "rnp-dqn")  # rnp-dqn's defaults live in its config dataclasses
    assert [key for key in table if key != "default" and key not in gym.registry] == []


def test_rnp_dqn_hyperparameters_have_one_source():
    """The defaults live only in the agents' dataclasses; rnp-dqn.yml holds per-env overrides that
    each fit the agent that env id gets, and none of them merely restates a default (a restated
    default is a second copy that silently drifts when the default changes)."""
    import dataclasses

    table = _hyperparameter_table("rnp-dqn")
    assert "default" not in table
    for env_id, overrides in table.items():
        config_class = custom_dqn_for(env_id).config_class
        config_class.from_dict(overrides)  # unknown keys, wrong types and ranges raise, naming the key
        defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
        assert [name for name, value in overrides.items() if defaults[name] == value] == [], env_id


@pytest.mark.parametrize("algo", ["dqn", "ppo", "ppo_mask", "a2c", "sac", "td3"])
def test_sb3_hyperparameter_files_fit_their_algorithms(algo):
    from prune_gym.agents.sb3 import constructor_kwargs

    table = _hyperparameter_table(algo)
    for env_id in table:
        constructor_kwargs(algo, load_hyperparams(algo, env_id))  # raises naming any key that does not fit


@pytest.mark.parametrize("env_id", ["RNP-CIFAR10-v0", "RNP-Synthetic-v0", "DropNet-MNIST-FC-v0",
                                    "LayerPrune-MNIST-v0", "AlphaBlend-CIFAR10-v0", "CartPole-v1"])
def test_the_env_family_picks_the_custom_dqn_agent(env_id):
    """One agent per file; the registry's family of the id decides which one rnp-dqn runs."""
    from prune_gym.registry import is_family

    agent = custom_dqn_for(env_id)
    expected = (RNPDQNTrainer, RNPDQNConfig) if is_family(env_id, "RNP") else (DQNTrainer, DQNConfig)
    assert (agent.trainer_class, agent.config_class) == expected
    assert not hasattr(agent.trainer_class, "recurrent")  # no flag that makes one class two agents


def test_a_killed_and_resumed_mlp_run_reaches_the_same_weights(tmp_path):
    kwargs = {"timesteps": 240, "seed": 1, "hyperparams": {"learning_starts": 16, "batch_size": 8,
                                                            "checkpoint_every": 50, "hidden_size": 16}}
    whole = train_run("CartPole-v1", "rnp-dqn", out=tmp_path / "whole", **kwargs)
    killed = train_run("CartPole-v1", "rnp-dqn", out=tmp_path / "killed",
                       callback=lambda iteration, row: iteration < 120, **kwargs)
    assert torch.load(killed / "checkpoints" / "latest.pt", weights_only=True)["iteration"] == 100
    train_run(out=killed, resume=True)
    whole_final = torch.load(whole / "final_model.pt", weights_only=True)
    resumed_final = torch.load(killed / "final_model.pt", weights_only=True)
    for key, value in whole_final["online"].items():
        torch.testing.assert_close(resumed_final["online"][key], value, rtol=0, atol=0)
    assert (whole / "metrics.csv").read_text() == (killed / "metrics.csv").read_text()


def _docstring_references(path):
    import re

    return re.findall(r":(?:func|class|mod|meth|data):`~?([\w.]+)`", path.read_text())


AGENT_MODULES = sorted(path.stem for path in (Path(__file__).parents[1] / "agents").glob("*.py"))


@pytest.mark.parametrize("module_name", AGENT_MODULES)  # every file, so a new or removed one is seen
def test_docstring_references_in_agents_exist(module_name):
    """Every :func:/:class:/:mod: a docstring in agents/ cites names something that exists."""
    import importlib
    from pathlib import Path

    import prune_gym.agents

    path = Path(prune_gym.agents.__file__).parent / f"{module_name}.py"
    module = importlib.import_module("prune_gym.agents" + ("" if module_name == "__init__" else f".{module_name}"))
    missing = []
    for reference in _docstring_references(path):
        parts, target = reference.split("."), None
        if parts[0] != "prune_gym":
            target = module
        else:  # the longest importable prefix, then attributes
            for end in range(len(parts), 0, -1):
                try:
                    target, parts = importlib.import_module(".".join(parts[:end])), parts[end:]
                    break
                except ImportError:
                    continue
        for part in parts:
            target = getattr(target, part, None)
        if target is None:
            missing.append(reference)
    assert missing == []


def test_the_command_line_parser_loads_no_torch():
    import subprocess
    import sys

    code = "import sys; from prune_gym.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("algo", ["sac", "td3"])
def test_sb3_box_algorithms_train_on_maskoffset_with_its_own_entry(tmp_path, fake_data_dir, algo):
    """The package's Box env: SAC and TD3 train on MaskOffset with its YAML entry (tiny budgets)."""
    from conftest import cheap_kwargs

    env_kwargs = cheap_kwargs("MaskOffset-CIFAR10-v0", fake_data_dir)
    run_dir = train_run("MaskOffset-CIFAR10-v0", algo, timesteps=6, out=tmp_path / algo, env_kwargs=env_kwargs,
                        hyperparams={"learning_starts": 2, "batch_size": 2, "gradient_steps": 1})
    config = read_config(run_dir)
    assert config["hyperparams"]["train_freq"] == 1 and config["hyperparams"]["buffer_size"] == 10000  # its entry
    assert (run_dir / "final_model.zip").exists()
    assert len((run_dir / "metrics.csv").read_text().splitlines()) >= 3  # episodes of two steps finished
