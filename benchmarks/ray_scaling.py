"""Wall clock of SB3 PPO on a training-in-the-loop env with 1 worker, N worker processes and N Ray actors.

    PRUNE_GYM_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/ray_scaling.py
    python benchmarks/ray_scaling.py --env-id DropNet-MNIST-FC-v0 --steps 24 --env-kwargs max_epochs=2

Every configuration trains PPO (``prune_gym.agents.sb3.make_sb3_env``, the env ``prune-gym train``
builds) for the same number of env steps in one rollout (``n_steps = steps / workers``) and one
update, and prints: setup (making the envs: worker processes or actors, first reset), the
rollout-and-update time of ``learn`` and seconds per env step, plus Ray's own start. Figures only:
nothing is asserted; the machine's other load moves them.
"""

from __future__ import annotations

import argparse
import json
import os
import time

DEFAULT_KWARGS = {"iterations_per_step": 16, "epochs": 8, "device": "cpu"}


def measure(env_id: str, env_kwargs: dict, steps: int, workers: int, ray: bool) -> dict:
    from stable_baselines3 import PPO

    from prune_gym.agents.sb3 import make_sb3_env

    start = time.perf_counter()
    venv = make_sb3_env(env_id, env_kwargs, workers, seed=0, ray=ray)
    venv.reset()
    setup_s = time.perf_counter() - start
    try:
        model = PPO("MlpPolicy", venv, n_steps=steps // workers, batch_size=steps, n_epochs=1, seed=0, device="cpu",
                    verbose=0)
        start = time.perf_counter()
        model.learn(steps)
        learn_s = time.perf_counter() - start
    finally:
        venv.close()
    kind = "Ray actors" if ray else ("worker processes (SubprocVecEnv)" if workers > 1 else "in-process (DummyVecEnv)")
    return {"workers": workers, "kind": kind, "env_steps": model.num_timesteps, "setup_s": round(setup_s, 2),
            "learn_s": round(learn_s, 2), "s_per_env_step": round(learn_s / model.num_timesteps, 3)}


def main(argv: list[str] | None = None) -> None:
    import torch

    import prune_gym  # noqa: F401
    from prune_gym.cli import parse_env_kwargs
    from prune_gym.ray_support import ray_session

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="LayerPrune-MNIST-v1")
    parser.add_argument("--steps", type=int, default=32, help="env steps per configuration (a multiple of --workers)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--env-kwargs", nargs="*", default=None, metavar="KEY=VALUE",
                        help=f"default: {' '.join(f'{k}={v}' for k, v in DEFAULT_KWARGS.items())}")
    parser.add_argument("--ray", default="local", metavar="ADDRESS", help="Ray instance (default: a local one)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    env_kwargs = DEFAULT_KWARGS if args.env_kwargs is None else parse_env_kwargs(args.env_kwargs)
    print(f"{args.env_id} {env_kwargs}, {args.steps} env steps of PPO per configuration, "
          f"torch threads per env {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    rows = [measure(args.env_id, env_kwargs, args.steps, 1, ray=False),
            measure(args.env_id, env_kwargs, args.steps, args.workers, ray=False)]
    start = time.perf_counter()
    with ray_session(args.ray):
        ray_start_s = time.perf_counter() - start
        rows.append(measure(args.env_id, env_kwargs, args.steps, args.workers, ray=True))
    print(f"Ray start: {ray_start_s:.1f} s")
    print("| workers | kind | env steps | setup (s) | learn (s) | s per env step | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['kind']} | {row['env_steps']} | {row['setup_s']} | {row['learn_s']} "
              f"| {row['s_per_env_step']} | {rows[0]['learn_s'] / row['learn_s']:.2f}× |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"env_id": args.env_id, "env_kwargs": env_kwargs, "ray_start_s": ray_start_s, "rows": rows},
                      handle, indent=2)


if __name__ == "__main__":
    main()
