"""What every environment promises, one test per promise, parametrized over every registered id
(after Minigrid's ``tests/test_envs.py``). Family-specific behaviour stays in the family's file.

Every id runs with the cheap kwargs of its family (``conftest.cheap_kwargs``: tiny budgets, fake
data of the right layout), so the whole file takes seconds.
"""

from __future__ import annotations

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import cheap_kwargs
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from prune_gym.envs.base import ACCOUNTING_KEYS
from prune_gym.registry import ENV_TABLE, env_ids, get_entry

VECTOR_IDS = [entry.id for entry in ENV_TABLE if entry.vector_entry_point is not None]
# Steps after which any cheap episode must have ended (the cheap budgets are 3–4 steps).
MAX_STEPS = 20

# The accounting keys that are integers and those that are fractions or nats (None where undefined).
INTEGER_KEYS = ("macs", "macs_full", "params", "params_full", "cycle")
FLOAT_KEYS = ("cross_entropy", "val_accuracy", "test_accuracy")

# Per family, an action that spends the budget without ending the task, and the kwargs that make
# sure nothing else ends the episode first (DropNet: κ = 0 on random labels). RNP has no budget.
BUDGET_ACTIONS = {"DropNet": (0, {"kappa": 0.0}), "LayerPrune": (0, {}), "AlphaBlend": (0, {})}


def make(env_id, fake_data_dir, **overrides) -> gym.Env:
    return gym.make(env_id, **{**cheap_kwargs(env_id, fake_data_dir), **overrides})


def play_masked(env: gym.Env, seed: int) -> list[tuple]:
    """A whole episode from ``reset(seed)``: every step's action drawn among the valid ones
    (``action_masks()``; uniform in the box for a ``Box`` action space) by a generator seeded with
    ``seed``; what every call returned."""
    rng = np.random.default_rng(seed)
    trace = [env.reset(seed=seed)]
    space = env.unwrapped.action_space
    for _ in range(MAX_STEPS):
        if isinstance(space, gym.spaces.Box):
            step = env.step(rng.uniform(space.low, space.high).astype(space.dtype))
        else:
            step = env.step(int(rng.choice(np.flatnonzero(env.unwrapped.action_masks()))))
        trace.append(step)
        if step[2] or step[3]:
            return trace
    raise AssertionError(f"the cheap episode did not end within {MAX_STEPS} steps")


def assert_accounting(info: dict) -> None:
    assert set(ACCOUNTING_KEYS) <= set(info), set(ACCOUNTING_KEYS) - set(info)
    for key in INTEGER_KEYS:
        assert type(info[key]) is int and info[key] >= 0, (key, info[key])
    for key in FLOAT_KEYS:
        assert info[key] is None or type(info[key]) is float, (key, info[key])
    assert 0 < info["macs_full"] and 0 < info["params_full"]
    for key in ("val_accuracy", "test_accuracy"):
        assert info[key] is None or 0.0 <= info[key] <= 1.0


@pytest.mark.parametrize("env_id", env_ids())
def test_passes_gymnasium_and_sb3_checkers(env_id, fake_data_dir):
    env = make(env_id, fake_data_dir).unwrapped
    with warnings.catch_warnings():
        # Honest unbounded observations (pooled ReLU features, γ, losses) make the checker warn.
        warnings.filterwarnings("ignore", message=".*infinity.*")
        gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)


@pytest.mark.parametrize("env_id", env_ids())
def test_a_seeded_episode_is_deterministic(env_id, fake_data_dir):
    first = play_masked(make(env_id, fake_data_dir), seed=3)
    second = play_masked(make(env_id, fake_data_dir), seed=3)
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]


@pytest.mark.parametrize("env_id", env_ids())
def test_spec_pickles_and_round_trips_through_json(env_id, fake_data_dir):
    env = make(env_id, fake_data_dir)
    assert pickle.loads(pickle.dumps(env.spec)) == env.spec
    restored = gym.envs.registration.EnvSpec.from_json(env.spec.to_json())
    assert restored.id == env_id and restored.kwargs == env.spec.kwargs


@pytest.mark.parametrize("env_id", env_ids())
def test_accounting_is_in_every_info(env_id, fake_data_dir):
    trace = play_masked(make(env_id, fake_data_dir), seed=0)
    assert_accounting(trace[0][1])
    assert trace[0][1]["cycle"] == 0
    for number, (*_, info) in enumerate(trace[1:], start=1):
        assert_accounting(info)
        assert info["cycle"] == number  # cycle counts the steps of this episode


@pytest.mark.parametrize("env_id", env_ids())
def test_action_masks_are_bool_per_action_and_used_by_maskable_ppo(env_id, fake_data_dir):
    env = make(env_id, fake_data_dir).unwrapped
    if not isinstance(env.action_space, gym.spaces.Discrete):  # the contract: masks on every Discrete env
        env = make(env_id, fake_data_dir, action_mode="discrete").unwrapped
    env.reset(seed=0)
    masks = env.action_masks()
    assert masks.dtype == np.bool_ and masks.shape == (env.action_space.n,) and masks.any()
    utils = pytest.importorskip("sb3_contrib.common.maskable.utils")
    assert utils.is_masking_supported(env)
    np.testing.assert_array_equal(utils.get_action_masks(env), masks)


@pytest.mark.parametrize("env_id", env_ids())
def test_floats_and_out_of_range_actions_are_refused(env_id, fake_data_dir):
    env = make(env_id, fake_data_dir).unwrapped
    env.reset(seed=0)
    if isinstance(env.action_space, gym.spaces.Box):
        bads = (np.array([1.5], np.float32), np.array([-1.01]), np.array([np.nan]), np.zeros(2), "1", True, [True])
    else:
        bads = (env.action_space.n, -1, 1.0, 0.7, "1", True)
    for bad in bads:
        with pytest.raises(ValueError, match="Invalid action"):
            env.step(bad)


@pytest.mark.parametrize("env_id", env_ids())
def test_budget_end_truncates_and_task_end_terminates(env_id, fake_data_dir):
    entry = get_entry(env_id)
    if entry.family not in BUDGET_ACTIONS:  # RNP: the last decision ends the task, never a budget
        *_, terminated, truncated, _ = play_masked(make(env_id, fake_data_dir), seed=0)[-1]
        assert terminated and not truncated
        return
    action, kwargs = BUDGET_ACTIONS[entry.family]
    env = make(env_id, fake_data_dir, **kwargs)
    env.reset(seed=0)
    for _ in range(MAX_STEPS):
        *_, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    budget_end = env.unwrapped.settings.__dict__.get("budget_end", "truncate")
    assert (terminated, truncated) == ((False, True) if budget_end == "truncate" else (True, False))


@pytest.mark.parametrize("env_id", VECTOR_IDS)
def test_vector_env_reports_the_accounting_and_refuses_float_actions(env_id, fake_data_dir):
    vector = gym.make_vec(env_id, num_envs=3, **cheap_kwargs(env_id, fake_data_dir))
    _, infos = vector.reset(seed=0)
    for key in ("macs", "macs_full", "params", "params_full", "cycle"):
        assert infos[key].shape == (3,) and infos[f"_{key}"].all(), key
    with pytest.raises(ValueError, match="Invalid actions"):
        vector.step(np.array([0.0, 1.7, 1.0]))
    _, _, _, _, infos = vector.step(np.zeros(3, dtype=np.int64))
    assert (infos["cycle"] == 1).all()
    assert vector.unwrapped.action_masks().shape == (3, vector.single_action_space.n)


@pytest.mark.parametrize("env_id", VECTOR_IDS)
def test_maskable_ppo_reads_one_mask_row_per_sub_env_through_the_sb3_adapter(env_id, fake_data_dir):
    from prune_gym.envs.sb3 import SB3VecEnvAdapter

    utils = pytest.importorskip("sb3_contrib.common.maskable.utils")
    venv = SB3VecEnvAdapter(gym.make_vec(env_id, num_envs=3, **cheap_kwargs(env_id, fake_data_dir)))
    venv.reset()
    assert utils.is_masking_supported(venv)
    assert utils.get_action_masks(venv).shape == (3, venv.action_space.n)
