"""Run directories: ``prune-gym train`` writes one, ``prune-gym evaluate`` and ``compare`` read it.

A run directory holds::

    config.json        env id, algorithm, seed, env kwargs, the resolved hyperparameters
    metrics.csv        one row per iteration (rnp-dqn on RNP) or per finished episode
    tb/                tensorboard logs
    checkpoints/       rnp-dqn: latest.pt (everything to resume); SB3: model_<steps>_steps.zip (+ replay)
    final_model.pt     rnp-dqn: the Q-network and the fine-tuned backbone
    final_model.zip    SB3: the trained model
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from prune_gym.agents import ALGORITHMS
from prune_gym.weights import atomic_torch_save

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
CONFIG_FILE = "config.json"


class NotARunError(FileNotFoundError):
    """A directory given as a run has no ``config.json`` written by ``prune-gym train``."""


# ----------------------------------------------------------------------------------------------
# Hyperparameters (RL-zoo layout)
# ----------------------------------------------------------------------------------------------


def load_hyperparams(algo: str, env_id: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``default`` of ``hyperparams/<algo>.yml``, updated by the env id's entry, then by ``overrides``."""
    import yaml

    check_algorithm(algo)
    table = yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text()) or {}
    values = dict(table.get("default", {}))
    values.update(table.get(env_id.split(":", 1)[-1], {}))
    values.update(overrides or {})
    return values


def check_algorithm(algo: str) -> None:
    if algo not in ALGORITHMS:
        raise ValueError(f"Unknown algorithm {algo!r}; valid: {', '.join(ALGORITHMS)}.")


def check_env_id(env_id: str) -> None:
    """A clear error for ids Gymnasium does not know (listing prune-gym's own)."""
    import prune_gym  # noqa: F401 - registers the ids
    from prune_gym.registry import env_ids

    if env_id.split(":", 1)[-1] not in gym.registry:
        raise ValueError(f"Unknown environment id {env_id!r}; prune-gym ids: {', '.join(env_ids())} "
                         "(any other registered Gymnasium id works too).")


# ----------------------------------------------------------------------------------------------
# Writing a run
# ----------------------------------------------------------------------------------------------


def write_metrics_csv(rows: list[dict[str, float]], path: Path) -> None:
    names: list[str] = []
    for row in rows:
        names.extend(name for name in row if name not in names)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def default_run_dir(env_id: str, algo: str, seed: int) -> Path:
    return Path("runs") / f"{env_id.split(':', 1)[-1]}-{algo}-s{seed}"


def train_run(env_id: str, algo: str, *, timesteps: int | None = None, seed: int = 0, out: str | Path | None = None,
              resume: bool = False, env_kwargs: dict[str, Any] | None = None,
              hyperparams: dict[str, Any] | None = None, callback: Callable[..., bool] | None = None) -> Path:
    """Train ``algo`` on ``env_id`` into a run directory (resuming it if ``resume``); returns the directory.

    ``timesteps`` and ``hyperparams`` override the YAML defaults; ``callback`` is passed to the custom
    DQN's loop (tests use it to stop a run early, as a kill would)."""
    run_dir = Path(out) if out is not None else default_run_dir(env_id, algo, seed)
    if resume:
        config = read_config(run_dir)
        env_id, algo, seed, env_kwargs = config["env_id"], config["algo"], config["seed"], config["env_kwargs"]
        values = config["hyperparams"]
    else:
        check_algorithm(algo)
        check_env_id(env_id)
        if (run_dir / CONFIG_FILE).exists():
            raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose "
                                  "another --out.")
        overrides = dict(hyperparams or {})
        if timesteps is not None:
            overrides["timesteps" if algo == "rnp-dqn" else "n_timesteps"] = int(timesteps)
        values = load_hyperparams(algo, env_id, overrides)
        env_kwargs = dict(env_kwargs or {})
        if algo == "rnp-dqn":
            from prune_gym.agents.dqn import DQNConfig

            values = asdict(DQNConfig.from_dict(values))  # validate now, store every resolved value
        run_dir.mkdir(parents=True, exist_ok=True)
        config = {"env_id": env_id, "algo": algo, "seed": seed, "env_kwargs": env_kwargs, "hyperparams": values}
        (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if algo == "rnp-dqn":
        _train_custom_dqn(run_dir, config, resume, callback)
    else:
        _train_sb3(run_dir, config, resume)
    return run_dir


def _train_custom_dqn(run_dir: Path, config: dict[str, Any], resume: bool,
                      callback: Callable[..., bool] | None) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from prune_gym.agents.dqn import DQNConfig, DQNTrainer, make_training_env

    dqn_config = DQNConfig.from_dict(config["hyperparams"])
    env = make_training_env(config["env_id"], config["env_kwargs"], dqn_config.num_envs)
    trainer = DQNTrainer(env, dqn_config, seed=config["seed"])
    checkpoint_path = run_dir / "checkpoints" / "latest.pt"
    if resume:
        if not checkpoint_path.exists():
            raise NotARunError(f"{run_dir} has no checkpoint to resume ({checkpoint_path} is missing).")
        trainer.load_state_dict(torch.load(checkpoint_path, map_location="cpu", weights_only=False))
    # purge_step drops tensorboard points a killed run logged after its last checkpoint.
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=trainer.iteration if resume else None)
    logged = len(trainer.metrics)

    def save(current: DQNTrainer) -> None:
        nonlocal logged
        for row in current.metrics[logged:]:
            step = int(row.get("transitions", row.get("iteration", 0)))
            for name, value in row.items():
                if isinstance(value, float) and not math.isnan(value):
                    writer.add_scalar(f"rnp_dqn/{name}", value, step)
        logged = len(current.metrics)
        writer.flush()
        atomic_torch_save(current.state_dict(), checkpoint_path)
        write_metrics_csv(current.metrics, run_dir / "metrics.csv")

    try:
        trainer.train(callback=callback, checkpoint=save)
    finally:
        writer.close()
    if trainer.iteration == trainer.total_iterations:
        atomic_torch_save({"online": trainer.online.state_dict(), "config": asdict(dqn_config),
                      "backbone": env.backbone_state_dict() if trainer.recurrent else None},
                     run_dir / "final_model.pt")


def _train_sb3(run_dir: Path, config: dict[str, Any], resume: bool) -> None:
    from prune_gym.agents.sb3 import latest_checkpoint, train_sb3

    resume_from = latest_checkpoint(run_dir) if resume else None
    if resume and resume_from is None:
        raise NotARunError(f"{run_dir} has no SB3 checkpoint to resume (checkpoints/model_*_steps.zip).")
    metrics: list[dict[str, float]] = []
    metrics_path = run_dir / "metrics.csv"
    if resume and metrics_path.exists():
        with metrics_path.open() as handle:
            metrics = [{key: float(value) for key, value in row.items() if value != ""}
                       for row in csv.DictReader(handle)]
    try:
        train_sb3(config["env_id"], config["algo"], config["hyperparams"], config["env_kwargs"], config["seed"],
                  run_dir, resume_from, metrics)
    finally:
        if metrics:
            write_metrics_csv(metrics, metrics_path)


# ----------------------------------------------------------------------------------------------
# Reading a run
# ----------------------------------------------------------------------------------------------


def read_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise NotARunError(f"{run_dir} is not a prune-gym run directory (no {CONFIG_FILE}); "
                           "create one with `prune-gym train ENV_ID --algo ALGO --out DIR`.")
    return json.loads(path.read_text())


def load_rnp_decider(run_dir: str | Path, env: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The trained policy of an RNP run as a batched decision function (numpy obs → actions); for
    rnp-dqn runs also loads the run's fine-tuned backbone into ``env``."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if config["algo"] == "rnp-dqn":
        from prune_gym.agents.dqn import DQNConfig, RecurrentDecider, build_q_network

        final = _final_model_path(run_dir, "final_model.pt")
        state = torch.load(final, map_location="cpu", weights_only=False)
        network = build_q_network(env, DQNConfig.from_dict(state["config"]))
        network.load_state_dict(state["online"])
        env.load_backbone_state_dict(state["backbone"])
        return RecurrentDecider(network.eval(), env.runtime.max_width)
    model = _load_sb3_model(run_dir, config)
    return lambda obs: np.asarray(model.predict(obs, deterministic=True)[0], dtype=np.int64)


def _final_model_path(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.exists():
        raise NotARunError(f"{run_dir} has no {name}: the run has not finished; continue it with "
                           f"`prune-gym train --resume --out {run_dir}`.")
    return path


def _load_sb3_model(run_dir: Path, config: dict[str, Any]) -> Any:
    from prune_gym.agents.sb3 import SB3_ALGORITHMS

    return SB3_ALGORITHMS[config["algo"]].load(_final_model_path(run_dir, "final_model.zip"), device="cpu")


def load_agent_policy(run_dir: str | Path) -> Any:
    """A trained run as a :class:`prune_gym.policies.ScriptedPolicy` (``make(env) -> policy(obs, info)``),
    so ``prune-gym compare --agents`` treats it like any scripted policy. The policy also has a
    ``decide_batch(obs)`` method where the env family evaluates many images at once (RNP)."""
    from prune_gym.policies import BatchPolicy, ScriptedPolicy
    from prune_gym.registry import family_of, is_family

    run_dir = Path(run_dir)
    config = read_config(run_dir)

    def make(env: gym.Env) -> Any:
        unwrapped = env.unwrapped
        if is_family(config["env_id"], "RNP"):
            return BatchPolicy(load_rnp_decider(run_dir, unwrapped))
        if config["algo"] == "rnp-dqn":
            from prune_gym.agents.dqn import DQNConfig, build_q_network, mlp_policy

            state = torch.load(_final_model_path(run_dir, "final_model.pt"), map_location="cpu", weights_only=False)
            network = build_q_network(unwrapped, DQNConfig.from_dict(state["config"]))
            network.load_state_dict(state["online"])
            return mlp_policy(network.eval())
        model = _load_sb3_model(run_dir, config)
        return lambda obs, info: model.predict(obs, deterministic=True)[0].item()

    name = f"{config['algo']}:{run_dir.name}"
    try:
        family = family_of(config["env_id"])
    except gym.error.UnregisteredEnv:  # a Gymnasium id (CartPole-v1) is a family of its own
        family = config["env_id"]
    return ScriptedPolicy(family, name, f"trained {config['algo']} run {run_dir}", make)
