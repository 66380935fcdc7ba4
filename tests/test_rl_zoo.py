"""The SB3 hyperparameter files are RL Zoo input: ``python -m rl_zoo3.train --conf-file`` reads one
complete entry per env id (``default`` where an id has none), and prune-gym resolves the same values."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import yaml

from prune_gym.agents.runs import HYPERPARAMS_DIR, load_hyperparams

SB3_ALGOS = ("ppo", "ppo_mask", "a2c", "dqn", "sac", "td3")
RNP_FULL = ("RNP-CIFAR10-v0", "RNP-CIFAR10-CNN6-v0", "RNP-CIFAR10-CNN8-v0", "RNP-CIFAR100-v0", "RNP-MNIST-v0")
DROPNET = ("DropNet-MNIST-FC-v0", "DropNet-MNIST-Conv-v0", "DropNet-CIFAR10-v0")
LAYERPRUNE = ("LayerPrune-CIFAR10-v1", "LayerPrune-MNIST-v1", "LayerPrune-CIFAR10-v0", "LayerPrune-MNIST-v0")
ALPHABLEND = ("AlphaBlend-CIFAR10-v1", "AlphaBlend-CIFAR10-v0")
GYMNASIUM = ("CartPole-v1", "Pendulum-v1")  # ids without an entry get `default`
EVERY_ID = (*RNP_FULL, "RNP-Synthetic-v0", *DROPNET, *LAYERPRUNE, *ALPHABLEND, *GYMNASIUM)

# What load_hyperparams resolved on main for every registered id (and two Gymnasium ids) before the
# files got complete entries; rewriting them for RL Zoo must not change a single value.
_PPO = {"n_timesteps": 200000, "n_envs": 4, "policy": "MlpPolicy", "learning_rate": 0.0003, "n_steps": 128,
        "batch_size": 64, "n_epochs": 10, "gamma": 0.99, "ent_coef": 0.0}
_PPO_RNP = {**_PPO, "n_envs": 256, "n_steps": 6, "batch_size": 512, "n_epochs": 4, "gamma": 1.0, "ent_coef": 0.01,
            "gae_lambda": 1.0, "policy_kwargs": {"net_arch": [128, 128]}}
_PPO_TRAINING_TIME = {**_PPO, "n_timesteps": 400, "n_envs": 1, "n_steps": 40, "batch_size": 40, "gamma": 1.0,
                      "ent_coef": 0.01, "gae_lambda": 0.95, "policy_kwargs": {"net_arch": [64, 64]}}
_A2C = {"n_timesteps": 200000, "n_envs": 4, "policy": "MlpPolicy", "learning_rate": 0.0007, "n_steps": 5,
        "gamma": 0.99}
_A2C_RNP = {**_A2C, "n_envs": 256, "n_steps": 3, "gamma": 1.0, "ent_coef": 0.01,
            "policy_kwargs": {"net_arch": [128, 128]}}
_DQN = {"n_timesteps": 200000, "n_envs": 1, "policy": "MlpPolicy", "learning_rate": 0.0005, "buffer_size": 100000,
        "learning_starts": 5000, "batch_size": 256, "gamma": 0.99, "train_freq": 4, "target_update_interval": 1000,
        "exploration_fraction": 0.3, "exploration_final_eps": 0.05}
_DQN_RNP = {**_DQN, "n_envs": 256, "gamma": 1.0, "train_freq": 1, "gradient_steps": 4,
            "policy_kwargs": {"net_arch": [128, 128]}}
_BOX = {"n_timesteps": 20000, "n_envs": 1, "policy": "MlpPolicy", "learning_rate": 0.001, "learning_starts": 1000,
        "buffer_size": 100000, "batch_size": 256}
PINNED: dict[str, list[tuple[tuple[str, ...], dict]]] = {
    "ppo": [(RNP_FULL, _PPO_RNP),
            (("RNP-Synthetic-v0",), {**_PPO_RNP, "n_timesteps": 20000, "n_envs": 64, "batch_size": 128}),
            ((*DROPNET, *GYMNASIUM), _PPO),
            (LAYERPRUNE, _PPO_TRAINING_TIME),
            (ALPHABLEND, {**_PPO_TRAINING_TIME, "n_timesteps": 100, "n_steps": 20, "batch_size": 20})],
    "a2c": [(RNP_FULL, _A2C_RNP),
            (("RNP-Synthetic-v0",), {**_A2C_RNP, "n_timesteps": 20000, "n_envs": 64}),
            ((*DROPNET, *LAYERPRUNE, *ALPHABLEND, *GYMNASIUM), _A2C)],
    "dqn": [(RNP_FULL, _DQN_RNP),
            (("RNP-Synthetic-v0",), {**_DQN_RNP, "n_timesteps": 20000, "n_envs": 64, "learning_starts": 1000}),
            ((*DROPNET, *LAYERPRUNE, *ALPHABLEND, *GYMNASIUM), _DQN)],
    "sac": [(EVERY_ID, _BOX)],
    "td3": [(EVERY_ID, _BOX)],
}
# ppo_mask.yml keeps ppo.yml's values for every id, so the two differ only in masking (comparable runs).
PINNED["ppo_mask"] = PINNED["ppo"]


def test_every_sb3_algorithm_has_its_file_pinned_here():
    from prune_gym.agents import ALGORITHMS

    assert sorted(SB3_ALGOS) == sorted(PINNED) == sorted(set(ALGORITHMS) - {"rnp-dqn"})


def _table(algo: str) -> dict:
    return yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text())


def rl_zoo_entry(table: dict, env_id: str) -> dict:
    """What ``rl_zoo3.exp_manager.ExperimentManager.read_hyperparameters`` (2.9) takes from a file:
    the id's entry as it stands, no merging, else ``default``; without either it raises."""
    return table[env_id] if env_id in table else table["default"]


@pytest.mark.parametrize("algo", SB3_ALGOS)
def test_hyperparameters_resolve_to_the_values_pinned_before_the_rl_zoo_layout(algo):
    pinned = {env_id: values for ids, values in PINNED[algo] for env_id in ids}
    assert sorted(pinned) == sorted(EVERY_ID)
    for env_id, values in pinned.items():
        assert load_hyperparams(algo, env_id) == values, env_id
        assert load_hyperparams(algo, f"prune_gym:{env_id}") == values, env_id


@pytest.mark.parametrize("algo", SB3_ALGOS)
def test_rl_zoo_reads_the_same_complete_entry_as_prune_gym(algo):
    """Every top-level entry stands alone (RL Zoo merges nothing), so RL Zoo and prune-gym agree."""
    table = _table(algo)
    for env_id in {*table, *EVERY_ID}:
        entry = rl_zoo_entry(table, env_id)
        assert {"policy", "n_timesteps", "n_envs"} <= set(entry), f"{algo}.yml: {env_id} is not a complete entry"
        assert entry == load_hyperparams(algo, env_id), f"{algo}.yml: {env_id}"


@pytest.mark.skipif(importlib.util.find_spec("rl_zoo3") is None,
                    reason="rl_zoo3 is not installed (pip install -e '.[zoo]')")
def test_rl_zoo_trains_ppo_on_an_rnp_id_with_the_package_ppo_yml(tmp_path):
    from stable_baselines3 import PPO

    env_id = "RNP-Synthetic-v0"
    expected = load_hyperparams("ppo", env_id)
    steps = expected["n_envs"] * expected["n_steps"]  # one rollout and one PPO update
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", env_id, "--gym-packages", "prune_gym",
               "--conf-file", str(HYPERPARAMS_DIR / "ppo.yml"), "-n", str(steps), "--eval-freq", "-1",
               "--seed", "0", "--device", "cpu", "--log-folder", str(tmp_path),
               "--env-kwargs", "pretrain_steps:2", "device:'cpu'"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    model = PPO.load(tmp_path / "ppo" / f"{env_id}_1" / f"{env_id}.zip", device="cpu")
    assert model.num_timesteps == steps
    assert (model.n_envs, model.n_steps, model.batch_size, model.n_epochs, model.gamma) == (
        expected["n_envs"], expected["n_steps"], expected["batch_size"], expected["n_epochs"], expected["gamma"])
