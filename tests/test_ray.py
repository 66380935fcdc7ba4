"""Scale-out on Ray (``--ray``): the actor-backed SB3 ``VecEnv`` and the Ray tasks of ``train``,
``compare`` and the RNP sweep give exactly what the local run gives.

Ray runs as one local instance with 2 CPUs for the whole module (shut down at its end); the
commands under test reuse it. The tests that need Ray skip, saying so, where the optional extra is
not installed; those about its absence run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import cheap_kwargs

from prune_gym import ray_support

HAS_RAY = importlib.util.find_spec("ray") is not None
requires_ray = pytest.mark.skipif(not HAS_RAY, reason='Ray is not installed: pip install -e ".[ray]" to run the '
                                                      "scale-out tests")

LAYERPRUNE_ID = "LayerPrune-MNIST-v1"
DROPNET_ID = "DropNet-MNIST-FC-v0"
TIMING_KEYS = {"step_s", "wall_s", "train_wall_s", "latency_full_ms", "latency_pruned_ms", "run"}


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance with 2 CPUs (the CI machine's), started after the test session's
    environment (private weights cache) is set, so its workers inherit it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def same(left, right) -> bool:
    """Deep equality of observations, infos and rows (arrays compared exactly)."""
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(left[key], right[key]) for key in left)
    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right))
    if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        return np.array_equal(np.asarray(left), np.asarray(right))
    return left == right or (left != left and right != right)  # NaN equals NaN here


def without_timings(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in TIMING_KEYS} for row in rows]


# ----------------------------------------------------------------------------------------------
# Without Ray
# ----------------------------------------------------------------------------------------------


def test_nothing_imports_ray_at_import_time():
    code = ("import sys, prune_gym, prune_gym.cli, prune_gym.ray_support, prune_gym.agents.sb3, "
            "prune_gym.agents.ray_vec_env, prune_gym.agents.runs, prune_gym.baselines.compare, "
            "prune_gym.baselines.rnp_pareto; prune_gym.cli.build_parser(); print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_without_ray_the_error_says_how_to_install_it(monkeypatch, fake_data_dir, tmp_path, capsys):
    from prune_gym.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where it is not installed
    with pytest.raises(ray_support.RayUnavailableError, match=r"prune-gym\[ray\]"):
        ray_support.require_ray()
    for argv in (["train", LAYERPRUNE_ID, "--algo", "ppo", "--out", str(tmp_path / "run"), "--ray"],
                 ["compare", DROPNET_ID, "--out", str(tmp_path / "compare"), "--ray", "10.0.0.5:6379"]):
        with pytest.raises(SystemExit, match=r'pip install "prune-gym\[ray\]"'):
            main(argv)
    assert not (tmp_path / "run").exists() and not (tmp_path / "compare").exists()


def test_ray_is_refused_where_it_has_nothing_to_spread(tmp_path):
    from prune_gym.agents.runs import train_run

    # Refused before Ray starts: these pass even without it.
    with pytest.raises(ValueError, match="--algo rnp-dqn steps one env"):
        train_run(LAYERPRUNE_ID, "rnp-dqn", out=tmp_path / "dqn", ray="local")
    assert not (tmp_path / "dqn").exists()


def test_several_local_envs_step_in_worker_processes(fake_data_dir):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from prune_gym.agents.sb3 import make_sb3_env

    kwargs = cheap_kwargs(LAYERPRUNE_ID, fake_data_dir)
    for n_envs, kind in ((1, DummyVecEnv), (2, SubprocVecEnv)):
        venv = make_sb3_env(LAYERPRUNE_ID, kwargs, n_envs, seed=0)
        try:
            assert isinstance(venv.unwrapped, kind)
        finally:
            venv.close()


# ----------------------------------------------------------------------------------------------
# RayVecEnv
# ----------------------------------------------------------------------------------------------


def play_vec(venv, steps: int) -> list:
    """Seeded reset, then ``steps`` vector steps of the first allowed action of every sub-env."""
    venv.seed(3)
    trace = [venv.reset(), [dict(info) for info in venv.reset_infos]]
    for _ in range(steps):
        masks = np.stack(venv.env_method("action_masks"))
        actions = masks.argmax(axis=1) if steps % 2 else masks.shape[1] - 1 - masks[:, ::-1].argmax(axis=1)
        trace.append(venv.step(actions))
        trace.append([dict(info) for info in venv.reset_infos])
    return trace


@requires_ray
def test_ray_vec_env_steps_exactly_as_dummy_vec_env(ray_instance, fake_data_dir):
    from stable_baselines3.common.vec_env import DummyVecEnv

    from prune_gym.agents.ray_vec_env import RayVecEnv

    kwargs = cheap_kwargs(LAYERPRUNE_ID, fake_data_dir)
    steps = kwargs["epochs"] + 2  # past the budget's end: auto-reset with terminal_observation
    local = DummyVecEnv([lambda: gym.make(LAYERPRUNE_ID, **kwargs)] * 2)
    remote = RayVecEnv(LAYERPRUNE_ID, 2, kwargs)
    try:
        expected, got = play_vec(local, steps), play_vec(remote, steps)
    finally:
        local.close()
        remote.close()
    assert any("terminal_observation" in info for _, _, dones, infos in expected[2::2] for info in infos)
    # Rewards come as SubprocVecEnv gives them (float64); DummyVecEnv's buffer holds float32.
    got[2::2] = [(obs, rewards.astype(np.float32), dones, infos) for obs, rewards, dones, infos in got[2::2]]
    assert same(expected, got)


@requires_ray
def test_ray_vec_env_reaches_the_envs_in_the_actors(ray_instance, fake_data_dir):
    from gymnasium.wrappers import OrderEnforcing
    from stable_baselines3.common.monitor import Monitor

    from prune_gym.agents.ray_vec_env import RayVecEnv

    venv = RayVecEnv(LAYERPRUNE_ID, 2, cheap_kwargs(LAYERPRUNE_ID, fake_data_dir))
    try:
        venv.reset()
        assert venv.get_attr("spec")[0].id == LAYERPRUNE_ID
        assert venv.has_attr("action_masks") and not venv.has_attr("no_such_attribute")
        venv.set_attr("marker", 7, indices=[1])
        assert venv.get_attr("marker", indices=1) == [7]
        masks = venv.env_method("action_masks")
        assert len(masks) == 2 and all(mask.dtype == bool for mask in masks)
        assert venv.env_is_wrapped(OrderEnforcing) == [True, True]
        assert venv.env_is_wrapped(Monitor) == [False, False]
    finally:
        venv.close()
    venv.close()  # closing twice is harmless


@requires_ray
def test_maskable_ppo_trains_on_ray_actors(ray_instance, fake_data_dir):
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks

    from prune_gym.agents.ray_vec_env import RayVecEnv

    venv = RayVecEnv(LAYERPRUNE_ID, 2, cheap_kwargs(LAYERPRUNE_ID, fake_data_dir))
    try:
        assert get_action_masks(venv).shape == (2, venv.action_space.n)
        model = MaskablePPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0, device="cpu")
        model.learn(8)
        assert model.num_timesteps == 8
    finally:
        venv.close()


# ----------------------------------------------------------------------------------------------
# The commands: --ray gives the local run's results
# ----------------------------------------------------------------------------------------------

PPO_SMALL = {"n_envs": 2, "n_steps": 4, "batch_size": 8, "n_epochs": 1}


@requires_ray
def test_train_with_ray_equals_the_local_run(ray_instance, fake_data_dir, tmp_path):
    from stable_baselines3 import PPO

    from prune_gym.agents.runs import read_config, train_run

    kwargs = cheap_kwargs(LAYERPRUNE_ID, fake_data_dir)
    runs = {}
    for name, ray in (("local", None), ("ray", "local")):  # local: two SubprocVecEnv workers
        runs[name] = train_run(LAYERPRUNE_ID, "ppo", timesteps=8, seed=1, out=tmp_path / name, env_kwargs=kwargs,
                               hyperparams=PPO_SMALL, ray=ray)
    assert read_config(runs["local"]) == read_config(runs["ray"])  # --ray is not a setting of the run
    assert (runs["local"] / "metrics.csv").read_text() == (runs["ray"] / "metrics.csv").read_text()
    weights = [PPO.load(run / "final_model.zip", device="cpu").policy.state_dict() for run in runs.values()]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


@requires_ray
def test_compare_with_ray_equals_the_local_run(ray_instance, fake_data_dir, tmp_path):
    from prune_gym.baselines.compare import compare, read_csv

    kwargs = cheap_kwargs(DROPNET_ID, fake_data_dir)
    for name, ray in (("local", None), ("ray", "local")):
        compare(DROPNET_ID, policies="min,random", seeds=2, out=tmp_path / name, env_kwargs=kwargs, ray=ray)
    local, remote = (read_csv(tmp_path / name / "results.csv") for name in ("local", "ray"))
    assert [(row["policy"], row["seed"]) for row in local] == [(row["policy"], row["seed"]) for row in remote]
    assert same(without_timings(local), without_timings(remote))
    assert {row["seed"] for row in remote} == {0, 1} and any(row["final"] for row in remote)


@requires_ray
def test_rnp_sweep_with_ray_equals_the_local_run(ray_instance, tmp_path, capsys):
    from prune_gym.baselines import rnp_pareto

    results = {}
    for name, extra in (("local", []), ("ray", ["--ray"])):
        rnp_pareto.main(["--env-id", "RNP-Synthetic-v0", "--out", str(tmp_path / name), "--penalties", "-0.1",
                         "--timesteps", "300", "--dqn-seeds", "2", "--sb3", "--vanilla-seeds", "1",
                         "--env-kwargs", "pretrain_steps=2", "device=cpu", *extra])
        results[name] = json.loads((tmp_path / name / "results.json").read_text())
    methods = [row["method"] for row in results["ray"]]
    assert "rnp-dqn p=-0.1 s1" in methods and any(name.startswith("vanilla") for name in methods)
    assert same(without_timings(results["local"]), without_timings(results["ray"]))


def _draw_from_global_generators(scale: int) -> list[float]:
    import random

    return [scale * random.random(), scale * float(np.random.rand()), scale * float(torch.rand(()))]


def test_a_local_job_does_not_depend_on_what_the_process_drew_before():
    """The bug: a job drawing from an unseeded global generator gave other results after other work."""
    first = ray_support.map_tasks(_draw_from_global_generators, [(1,), (2,)])
    np.random.rand(5), torch.rand(5)  # the process's history moves on
    assert ray_support.map_tasks(_draw_from_global_generators, [(1,), (2,)]) == first
    assert first[1] == [2 * value for value in first[0]]  # each job starts from the same state
