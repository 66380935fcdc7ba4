import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO

from prune_gym.data import DatasetNotFoundError
from prune_gym.envs.rnp import DEFAULT_GROUP_PENALTY
from prune_gym.envs.sb3 import SB3VecEnvAdapter

SYNTHETIC = {"pretrain_steps": 40, "device": "cpu"}




def test_episode_accounting_and_rnp_reward():
    env = gym.make("RNP-Synthetic-v0", **SYNTHETIC)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    runtime = env.unwrapped.runtime
    stem = runtime.costs[0]
    assert info == {"macs": stem.macs(), "macs_full": runtime.macs_full, "params": stem.params(),
                    "params_full": info["params_full"], "cross_entropy": None, "val_accuracy": None,
                    "test_accuracy": None, "cycle": 0}
    width = runtime.max_width
    assert obs[width] == 1.0 and obs[width + 1:width + 3].sum() == 0  # one-hot: first decided layer
    assert obs[-1] == pytest.approx(runtime.costs[0].macs() / runtime.macs_full)
    rewards = []
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(3)
        rewards.append(reward)
    assert terminated and not truncated
    assert info["macs"] == info["macs_full"] == runtime.macs_full and obs[-1] == pytest.approx(1.0)
    assert obs[width:width + 3].sum() == 0
    assert isinstance(reward, float) and isinstance(info["correct"], bool)
    penalty = DEFAULT_GROUP_PENALTY  # action 3 costs 3 · p per step
    assert rewards[:2] == [pytest.approx(3 * penalty), pytest.approx(3 * penalty)]
    assert rewards[2] == pytest.approx(3 * penalty - info["cross_entropy"])
    assert set(info) >= {"macs", "macs_full", "params", "params_full", "cross_entropy", "correct", "label"}


def test_macs_reward_mode_charges_each_layer():
    env = gym.make("RNP-Synthetic-v0", reward_mode="macs", mac_weight=2.0, **SYNTHETIC)
    env.reset(seed=1)
    runtime = env.unwrapped.runtime
    total = 0.0
    for _ in range(3):
        _, reward, terminated, _, info = env.step(0)
        total += reward
    used_after_stem = info["macs"] - runtime.costs[0].macs()
    assert total == pytest.approx(-2.0 * used_after_stem / runtime.macs_full - info["cross_entropy"])


def test_narrow_choices_cost_fewer_macs():
    env = gym.make("RNP-Synthetic-v0", **SYNTHETIC)
    macs = {}
    for action in range(4):
        env.reset(options={"image_index": 0})
        for _ in range(3):
            *_, info = env.step(action)
        macs[action] = info["macs"]
    assert macs[0] < macs[1] < macs[2] < macs[3] == info["macs_full"]


def test_native_vector_env_equals_single_envs_on_the_same_seeds_and_actions():
    num_envs, seed = 5, 11
    vector = gym.make_vec("RNP-Synthetic-v0", num_envs=num_envs, **SYNTHETIC)
    assert vector.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    singles = [gym.make("RNP-Synthetic-v0", **SYNTHETIC) for _ in range(num_envs)]
    rng = np.random.default_rng(0)
    vector_obs, _ = vector.reset(seed=seed)
    single_obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_allclose(vector_obs, np.stack(single_obs), rtol=1e-5, atol=1e-6)
    for _ in range(9):  # three episodes, with autoreset
        actions = rng.integers(0, 4, num_envs)
        obs, rewards, terminated, truncated, infos = vector.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(int(actions[i]))
            assert (term, trunc) == (terminated[i], truncated[i])
            assert r == pytest.approx(rewards[i], rel=1e-5, abs=1e-6)
            if term:
                np.testing.assert_allclose(infos["final_obs"][i], o, rtol=1e-5, atol=1e-6)
                for key, value in info.items():
                    if value is None:  # undefined in the single env: absent from the vector's info
                        assert key not in infos["final_info"], key
                    else:
                        assert infos["final_info"][key][i] == pytest.approx(value, rel=1e-5), key
                o, _ = env.reset()
            else:
                assert all(infos[key][i] == info[key] for key in ("macs", "params", "cycle")) and infos["_macs"][i]
            np.testing.assert_allclose(obs[i], o, rtol=1e-5, atol=1e-6)


def test_invalid_actions_and_misuse_are_clear_errors():
    env = gym.make("RNP-Synthetic-v0", **SYNTHETIC).unwrapped
    env.reset(seed=0)
    for bad in (4, -1, 1.5, "2"):
        with pytest.raises(ValueError, match=r"expected an integer in 0\.\.3"):
            env.step(bad)
    for _ in range(3):
        env.step(0)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)
    vector = gym.make_vec("RNP-Synthetic-v0", num_envs=3, **SYNTHETIC)
    vector.reset(seed=0)
    with pytest.raises(ValueError, match="Invalid actions"):
        vector.step(np.array([0, 4, 1]))



@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k": 64}, r"do not fit backbone 'cnn4'.*choose k in 1\.\.32"),
    ({"dataset": "imagenet"}, "dataset must be one of"),
    ({"backbone": "vgg"}, "Unknown backbone"),
    ({"split": "dev"}, "split must be one of"),
    ({"reward_mode": "accuracy"}, "reward_mode must be one of"),
    ({"pretrain_precision": "fp16"}, "pretrain_precision must be one of"),
])
def test_bad_kwargs_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        env = gym.make("RNP-Synthetic-v0", **{**SYNTHETIC, **kwargs})
        env.reset(seed=0)


def test_unknown_vector_kwarg_is_a_clear_error():
    with pytest.raises(TypeError, match="Unknown RNP arguments"):
        gym.make_vec("RNP-Synthetic-v0", num_envs=2, groups=3)


def test_missing_real_data_is_an_error_not_a_fallback(tmp_path):
    env = gym.make("RNP-MNIST-v0", data_root=str(tmp_path / "empty.npz"), device="cpu")
    with pytest.raises(DatasetNotFoundError, match="empty.npz"):
        env.reset(seed=0)


def test_finetune_changes_only_this_envs_backbone():
    tuned, untouched = (gym.make("RNP-Synthetic-v0", **SYNTHETIC).unwrapped for _ in range(2))
    tuned.reset(seed=0)
    untouched.reset(seed=0)
    before = [p.clone() for p in untouched.runtime.backbone.parameters()]
    metrics = tuned.finetune_backbone(lambda obs: np.zeros(len(obs), dtype=np.int64), steps=3, batch_size=16, lr=1e-2)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert tuned.runtime.backbone is not untouched.runtime.backbone
    assert any(not torch.equal(a, b) for a, b in zip(before, tuned.runtime.backbone.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, untouched.runtime.backbone.parameters()))


def test_sb3_trains_on_the_native_vector_env_through_the_adapter():
    venv = SB3VecEnvAdapter(gym.make_vec("RNP-Synthetic-v0", num_envs=8, **SYNTHETIC))
    venv.seed(3)
    obs = venv.reset()
    assert obs.shape == (8, venv.observation_space.shape[0])
    for _ in range(3):
        obs, rewards, dones, infos = venv.step(np.zeros(8, dtype=np.int64))
    assert dones.all() and "terminal_observation" in infos[0] and "cross_entropy" in infos[0]
    PPO("MlpPolicy", venv, n_steps=6, batch_size=24, n_epochs=1, seed=0, device="cpu").learn(48)


def test_adapter_needs_same_step_autoreset():
    sync = gym.make_vec("RNP-Synthetic-v0", num_envs=2, vectorization_mode="sync", **SYNTHETIC)
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnvAdapter(sync)
