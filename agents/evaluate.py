"""``prune-gym evaluate``: run a trained policy greedily and report accuracy, MACs and latency.

For RNP runs every image of the chosen split (or of ``--eval-data``) is classified once by the
run's backbone under the policy, through :class:`~prune_gym.pruning.runtime.RuntimePrunedNet` (the
code path a deployment runs). The references are the *pretrained* backbone at full width on the
same images (``accuracy_full``, ``macs_full``) — what one had before pruning — and the run's own
backbone at full width (``accuracy_full_finetuned``), since RNP fine-tunes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from prune_gym.agents.runs import load_agent_policy, load_rnp_decider, read_config, run_identity
from prune_gym.evaluation import evaluate_rnp_policy, rnp_images
from prune_gym.registry import is_family


def evaluate_run(run_dir: str | Path, split: str = "test", eval_data: str | None = None,
                 episodes: int = 5) -> dict[str, Any]:
    """The figures of a trained run (see the module docstring); ``episodes`` only for non-RNP envs."""
    import prune_gym  # noqa: F401 - registers the ids
    from prune_gym.registry import get_entry

    config = read_config(run_dir)
    env_id, env_kwargs = config["env_id"], dict(config["env_kwargs"])
    if eval_data is not None:
        check_eval_data_fits(run_dir, config, eval_data)
    if is_family(env_id, "RNP"):
        kwargs = {**get_entry(env_id).kwargs, **env_kwargs}
        env = gym.make(env_id, **env_kwargs).unwrapped
        reference_env = gym.make(env_id, **env_kwargs).unwrapped
        decide = load_rnp_decider(run_dir, env)
        images, labels, source = rnp_images(env, split, eval_data)
        figures = evaluate_rnp_policy(env, decide, images, labels, reference_env)
        return {"run": str(run_dir), "env_id": env_id, "algo": config["algo"], "evaluated_on": source,
                "env_kwargs": kwargs, **figures}
    if eval_data is not None:
        env_kwargs["eval_data"] = eval_data
    env = gym.make(env_id, **env_kwargs)
    policy = load_agent_policy(run_dir).make(env)
    finals = []
    for episode in range(episodes):
        obs, info = env.reset(seed=10_000 + episode)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy(obs, info))
            done = terminated or truncated
        finals.append({key: float(value) for key, value in info.items() if isinstance(value, (int, float, np.number))})
    keys = sorted(set().union(*finals))
    return {"run": str(run_dir), "env_id": env_id, "algo": config["algo"], "episodes": episodes,
            **{key: float(np.mean([row[key] for row in finals if key in row])) for key in keys}}


def check_eval_data_fits(run_dir: str | Path, config: dict[str, Any], eval_data: str) -> None:
    """``--eval-data`` holds real images of the run's dataset; a run trained on generated
    (synthetic) images has no such dataset, and its figures on another one would mean nothing."""
    dataset = run_identity(config).get("dataset")
    if dataset == "synthetic":
        raise ValueError(
            f"Run {run_dir} was trained on synthetic images ({config['env_id']}), so --eval-data {eval_data} would "
            "score it on images from another distribution. Evaluate it on its own images (--split test, val or "
            "train), or use --eval-data with a run trained on mnist, cifar10 or cifar100.")
