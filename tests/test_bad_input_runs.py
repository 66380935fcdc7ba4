"""Runs and agents under bad input, kills and hostile files (issue 12): each test failed before its fix.

Run directories come from tiny trainings (CartPole-v1 and RNP-Synthetic-v0, seconds each) made
once per module; a test that changes one works on a copy.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from prune_gym.agents.runs import RunMismatchError, load_agent_policy, read_config, train_run
from prune_gym.cli import main as cli_main
from tests.conftest import write_fake_npz

SYNTHETIC = {"pretrain_steps": 2, "device": "cpu"}
TINY_RNP = {"num_envs": 16, "learning_starts": 16, "batch_size": 8, "hidden_size": 16, "finetune_every": 2,
            "finetune_steps": 2}
TINY_MLP = {"learning_starts": 8, "batch_size": 8, "hidden_size": 16, "checkpoint_every": 20}
TINY_PPO = {"n_envs": 1, "n_steps": 64, "batch_size": 32, "n_epochs": 1}
# Short CartPole episodes keep SB3's evaluation callback cheap (an untrained greedy policy may
# otherwise balance for 500 steps at each of its ten evaluations).
SHORT_EPISODES = {"max_episode_steps": 20}


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    """A finished rnp-dqn run (the MLP agent) on CartPole-v1: 60 env steps."""
    return train_run("CartPole-v1", "rnp-dqn", timesteps=60, out=tmp_path_factory.mktemp("runs") / "cartpole",
                     hyperparams=TINY_MLP)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A finished rnp-dqn run (the RNP agent) on RNP-Synthetic-v0 with k=4: 4 batches of 16 images."""
    return train_run("RNP-Synthetic-v0", "rnp-dqn", timesteps=16 * 3 * 4, out=tmp_path_factory.mktemp("runs") / "rnp",
                     env_kwargs=SYNTHETIC, hyperparams=TINY_RNP)


def copy_of(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / run_dir.name)


def one_line_error(command: list[str]) -> str:
    """The message ``prune-gym COMMAND`` exits with; it must be one line, with no traceback advice."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(command)
    message = str(exit_info.value.code)
    assert message.startswith("prune-gym: error: ") and "\n" not in message, message
    for advice in ("weights_only", "allow_pickle", "Traceback"):
        assert advice not in message, message
    return message


# -- 4. run files cannot execute code ------------------------------------------------------------


class RunsCodeWhenUnpickled:
    """What a hostile run file holds: unpickling it writes ``marker`` (a harmless stand-in for a shell command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_run_files_hold_only_tensors_and_plain_data(cartpole_run, synthetic_run):
    for run_dir in (cartpole_run, synthetic_run):
        for name in ("final_model.pt", "checkpoints/latest.pt"):
            assert isinstance(torch.load(run_dir / name, weights_only=True), dict)
    rng_state = torch.load(synthetic_run / "checkpoints" / "latest.pt", weights_only=True)["rng"]["numpy"]
    assert json.loads(json.dumps(rng_state)) == rng_state  # plain ints and strings


def test_a_model_file_that_would_run_code_is_refused(cartpole_run, tmp_path):
    run_dir, marker = copy_of(cartpole_run, tmp_path), tmp_path / "ran"
    torch.save({"online": RunsCodeWhenUnpickled(marker), "config": {"hidden_size": 16}}, run_dir / "final_model.pt")
    message = one_line_error(["evaluate", str(run_dir)])
    assert "final_model.pt" in message and "could run code" in message
    assert not marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused_on_resume(cartpole_run, tmp_path):
    run_dir, marker = copy_of(cartpole_run, tmp_path), tmp_path / "ran"
    torch.save({"iteration": RunsCodeWhenUnpickled(marker)}, run_dir / "checkpoints" / "latest.pt")
    message = one_line_error(["train", "--resume", "--out", str(run_dir)])
    assert "latest.pt" in message and "could run code" in message
    assert not marker.exists()


# -- 5. truncated, empty or garbage run files ------------------------------------------------------


def damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                      "garbage": np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()}[how])


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage"])
@pytest.mark.parametrize(("name", "command"), [("final_model.pt", ["evaluate"]),
                                               ("checkpoints/latest.pt", ["train", "--resume", "--out"]),
                                               ("config.json", ["evaluate"]),
                                               ("config.json", ["train", "--resume", "--out"])])
def test_a_damaged_run_file_is_a_one_line_error_naming_it(cartpole_run, tmp_path, name, command, how):
    run_dir = copy_of(cartpole_run, tmp_path)
    damage(run_dir / name, how)
    message = one_line_error([*command, str(run_dir)])
    assert str(run_dir / name) in message


# -- 6. an agent acts only in the env it was trained on ---------------------------------------------


def test_an_agent_refuses_an_env_with_another_k(synthetic_run):
    env = gym.make("RNP-Synthetic-v0", k=2, **SYNTHETIC)
    with pytest.raises(RunMismatchError, match=r"RNP-Synthetic-v0 \(.*k=4\).*RNP-Synthetic-v0 \(.*k=2\).*its k differ"):
        load_agent_policy(synthetic_run).make(env.unwrapped)


def test_compare_refuses_an_agent_trained_on_another_dataset(synthetic_run, tmp_path):
    """The run says it was trained on RNP-CIFAR10-v0; like a run written before identities were
    stored, its config has only the env id, from which the registry gives the dataset."""
    run_dir = copy_of(synthetic_run, tmp_path)
    config = read_config(run_dir)
    config["env_id"] = "RNP-CIFAR10-v0"
    del config["env_identity"]
    (run_dir / "config.json").write_text(json.dumps(config))
    message = one_line_error(["compare", "RNP-Synthetic-v0", "--agents", str(run_dir), "--policies", "",
                              "--out", str(tmp_path / "compare"), "--env-kwargs", "pretrain_steps=2", "device=cpu"])
    assert "RNP-CIFAR10-v0 (dataset=cifar10" in message and "RNP-Synthetic-v0 (dataset=synthetic" in message


def test_an_agent_acts_in_the_env_it_was_trained_on(synthetic_run):
    env = gym.make("RNP-Synthetic-v0", **SYNTHETIC)
    obs, info = env.reset(seed=0)
    assert 0 <= load_agent_policy(synthetic_run).make(env.unwrapped)(obs, info) < 4


def test_evaluate_refuses_eval_data_for_a_synthetic_run(synthetic_run, tmp_path):
    other = write_fake_npz(tmp_path / "other.npz", "cifar10")
    message = one_line_error(["evaluate", str(synthetic_run), "--eval-data", str(other)])
    assert "synthetic" in message and "--split" in message


# -- 7. SB3 metrics survive a kill ----------------------------------------------------------------


def test_sb3_metrics_reach_the_file_during_training(tmp_path, monkeypatch):
    from prune_gym.agents import sb3

    metrics, rows_on_disk = tmp_path / "run" / "metrics.csv", []
    original = sb3.EpisodeMetricsCallback._on_rollout_end

    def count_rows_after_each_rollout(self):
        original(self)
        rows_on_disk.append(len(metrics.read_text().splitlines()) - 1 if metrics.exists() else 0)

    monkeypatch.setattr(sb3.EpisodeMetricsCallback, "_on_rollout_end", count_rows_after_each_rollout)
    train_run("CartPole-v1", "ppo", timesteps=256, out=tmp_path / "run", hyperparams=TINY_PPO,
              env_kwargs=SHORT_EPISODES)
    assert len(rows_on_disk) == 4 and rows_on_disk[0] > 0 and rows_on_disk == sorted(rows_on_disk)


def test_a_resumed_sb3_run_appends_to_its_metrics(tmp_path):
    run_dir = train_run("CartPole-v1", "ppo", timesteps=128, out=tmp_path / "run", hyperparams=TINY_PPO,
                        env_kwargs=SHORT_EPISODES)
    first = (run_dir / "metrics.csv").read_text().splitlines()
    # A killed run may have logged episodes after its last checkpoint (at 128): the resumed run replays them.
    with (run_dir / "metrics.csv").open("a") as handle:
        handle.write("100000,1.0,1,,,,,\n")
    train_run(out=run_dir, resume=True, timesteps=256)
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    assert lines[: len(first)] == first and len(lines) > len(first)
    timesteps = [int(line.split(",")[0]) for line in lines[1:]]
    assert timesteps == sorted(timesteps) and 128 < timesteps[-1] <= 256


# -- 8. a failed start leaves nothing behind ------------------------------------------------------


def test_a_start_with_bad_env_kwargs_leaves_the_directory_free(tmp_path):
    out = tmp_path / "F"
    command = ["train", "RNP-Synthetic-v0", "--out", str(out), "--timesteps", "96",
               "--hyperparams", *(f"{key}={value}" for key, value in TINY_RNP.items())]
    assert "dropout" in one_line_error([*command, "--env-kwargs", "dropout=2", "pretrain_steps=2", "device=cpu"])
    assert not out.exists()
    cli_main([*command, "--env-kwargs", "dropout=0", "pretrain_steps=2", "device=cpu"])
    assert (out / "final_model.pt").exists()


def test_a_start_that_fails_before_its_first_checkpoint_removes_only_what_it_wrote(tmp_path):
    out = tmp_path / "F"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    def fail(iteration, row):
        if iteration == 5:
            raise RuntimeError("the machine went away")
        return True

    with pytest.raises(RuntimeError, match="went away"):
        train_run("CartPole-v1", "rnp-dqn", timesteps=60, out=out, hyperparams=TINY_MLP, callback=fail)
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
    train_run("CartPole-v1", "rnp-dqn", timesteps=60, out=out, hyperparams=TINY_MLP)
    assert (out / "final_model.pt").exists()


# -- 9. --resume refuses what differs, and trains longer on request -------------------------------


@pytest.mark.parametrize(("given", "named"), [
    ({"env_id": "Acrobot-v1"}, "ENV_ID Acrobot-v1 (the run's: CartPole-v1)"),
    ({"algo": "ppo"}, "--algo ppo (the run's: rnp-dqn)"),
    ({"seed": 5}, "--seed 5 (the run's: 0)"),
    ({"env_kwargs": {"max_episode_steps": 10}}, "--env-kwargs max_episode_steps=10 (the run's: not set)"),
    ({"hyperparams": {"lr": 0.1}}, "--hyperparams lr=0.1 (the run's: 0.0005)"),
    ({"timesteps": 40}, "cannot be shortened"),
])
def test_resume_refuses_settings_that_differ_from_the_run(cartpole_run, tmp_path, given, named):
    run_dir = copy_of(cartpole_run, tmp_path)
    before = (run_dir / "config.json").read_text()
    with pytest.raises(ValueError) as error:
        train_run(out=run_dir, resume=True, **given)
    assert named in str(error.value)
    assert (run_dir / "config.json").read_text() == before


def test_resume_with_more_timesteps_trains_longer(cartpole_run, tmp_path, caplog):
    run_dir = copy_of(cartpole_run, tmp_path)
    with caplog.at_level(logging.INFO):
        cli_main(["train", "--resume", "--out", str(run_dir), "--timesteps", "100", "--algo", "rnp-dqn"])
    assert "longer: to 100 timesteps instead of 60" in caplog.text
    assert read_config(run_dir)["hyperparams"]["timesteps"] == 100
    assert torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)["iteration"] == 100


# -- 10. hyperparameters are checked, naming the key ----------------------------------------------


@pytest.mark.parametrize(("algo", "pair", "named"), [
    ("ppo", "n_steps=-1", "n_steps=-1 must be ≥ 1"),
    ("ppo", "learning_rate=abc", "learning_rate='abc' must be a number or a schedule function"),
    ("ppo", "n_step=64", "Unknown ppo hyperparameters ['n_step']"),
    ("a2c", "gamma=2", "gamma=2 must lie in [0, 1]"),
    ("dqn", "train_freq=often", "train_freq='often' must be an integer or a list [an integer, a string]"),
    ("dqn", "seed=3", "set by prune-gym"),
    ("rnp-dqn", "lr=abc", "lr must be a number, got 'abc'"),
    ("rnp-dqn", "lr=-0.1", "lr must be a positive number, got -0.1"),
])
def test_bad_hyperparameters_are_one_line_errors_naming_the_key(tmp_path, algo, pair, named):
    out = tmp_path / "run"
    message = one_line_error(["train", "CartPole-v1", "--algo", algo, "--out", str(out), "--hyperparams", pair])
    assert named in message
    assert not out.exists()


def test_hyperparameters_from_json_reach_sb3_in_its_types():
    from prune_gym.agents.sb3 import constructor_kwargs

    assert constructor_kwargs("dqn", {"train_freq": [2, "step"], "n_timesteps": 10}) == {"train_freq": (2, "step")}


# -- 11. progress a person can read ---------------------------------------------------------------


def progress_lines(caplog, prefix):
    """The plain progress lines (``prune_gym.progress``, logged under pytest's handler) starting with ``prefix``."""
    return [record.getMessage() for record in caplog.records
            if record.name == "prune_gym.progress" and record.getMessage().startswith(prefix)]


def test_ppo_progress_ends_at_the_timesteps_that_ran(tmp_path, caplog, monkeypatch):
    from prune_gym import progress

    monkeypatch.setattr(progress, "is_interactive", lambda stream=None: False)
    monkeypatch.setattr(progress, "DEFAULT_INTERVAL_S", 0.0)  # a line per update
    with caplog.at_level(logging.INFO, logger="prune_gym"):
        # Rollouts of 2 envs × 48 steps = 96 timesteps: 200 requested → 3 rollouts → 288 (the issue's
        # "768 of 600" had 4 envs × 96 steps).
        run_dir = train_run("CartPole-v1", "ppo", timesteps=200, out=tmp_path / "run", env_kwargs=SHORT_EPISODES,
                            hyperparams={"n_envs": 2, "n_steps": 48, "batch_size": 48, "n_epochs": 1})
    lines = progress_lines(caplog, "ppo: ")
    assert "runs to 288 timesteps (200 requested)" in caplog.text
    assert len(lines) > 2 and all("/288 steps" in line for line in lines)
    assert lines[-1].startswith("ppo: 288/288 steps (100 %)")
    from stable_baselines3 import PPO

    assert PPO.load(run_dir / "final_model.zip").num_timesteps == 288


def test_rnp_dqn_prints_progress_lines_without_a_terminal(tmp_path, caplog, monkeypatch):
    from prune_gym import progress

    monkeypatch.setattr(progress, "is_interactive", lambda stream=None: False)
    monkeypatch.setattr(progress, "DEFAULT_INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO):
        train_run("CartPole-v1", "rnp-dqn", timesteps=60, out=tmp_path / "run", hyperparams=TINY_MLP)
    lines = progress_lines(caplog, "rnp-dqn (MLP): ")
    assert len(lines) >= 60 and lines[-1].startswith("rnp-dqn (MLP): 60/60 iterations (100 %)")


def test_an_agent_trained_in_an_arena_acts_in_its_base_id_and_nowhere_else(tmp_path):
    """An arena keeps its base id's spaces and reward at a smaller budget, so a run trained there
    is evaluated at the family's full budget; any other id (another dataset) is still refused."""
    from prune_gym.agents.runs import check_run_fits_env

    config = {"env_id": "LayerPrune-MNIST-Arena-v1", "env_kwargs": {},
              "env_identity": {"env_id": "LayerPrune-MNIST-Arena-v1", "dataset": "mnist"}}
    check_run_fits_env(tmp_path, config, gym.make("LayerPrune-MNIST-v1"))
    with pytest.raises(RunMismatchError, match="its env_id, dataset differ"):
        check_run_fits_env(tmp_path, config, gym.make("LayerPrune-CIFAR10-v1"))
    base_run = {**config, "env_identity": {"env_id": "LayerPrune-MNIST-v1", "dataset": "mnist"}}
    with pytest.raises(RunMismatchError, match="its env_id differ"):  # only arena → base
        check_run_fits_env(tmp_path, base_run, gym.make("LayerPrune-MNIST-Arena-v1"))


ARENA_DOCS = Path(__file__).parent.parent / "docs" / "arena"
KEPT_RUNS = sorted(path.parent for path in ARENA_DOCS.glob("*/agents/*/config.json"))


@pytest.mark.parametrize("run_dir", KEPT_RUNS, ids=[run.name for run in KEPT_RUNS])
def test_the_trained_runs_kept_in_docs_still_load_and_act(run_dir):
    """The README's arena comparisons rerun from the runs kept in docs/arena/*/agents: a change of
    the run format, of an env's spaces or of the Q-network would silently orphan them."""
    policy = load_agent_policy(run_dir)
    env_id = read_config(run_dir)["env_id"]
    env = gym.make(env_id)  # no reset: the spaces are known without data or training
    act = policy.make(env)
    action = act(env.observation_space.sample(), {})
    space = env.action_space  # Discrete (DQN runs) or MaskOffset's Box(-1, 1, (1,)) (SAC runs)
    value = np.int64(action) if isinstance(space, gym.spaces.Discrete) else np.full(space.shape, action, space.dtype)
    assert space.contains(value)
