"""The ``prune-gym`` command line: ``envs``, ``pretrain``, ``ship-weights``, ``bench``, ``train``, ``evaluate``,
``compare``."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from prune_gym.registry import ENV_TABLE, get_entry


def parse_env_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``["k=8", "split=test", "data_root=/x.npz"]`` → kwargs; values are JSON where they parse, else strings."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        name, separator, text = pair.partition("=")
        if not separator or not name:
            raise SystemExit(f"--env-kwargs expects key=value pairs, got {pair!r}.")
        try:
            kwargs[name] = json.loads(text)
        except json.JSONDecodeError:
            kwargs[name] = text
    return kwargs


def _write_json(figures: dict[str, Any], path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {path}")


def require_family(env_id: str, family: str, command: str) -> str:
    """``env_id``'s registered id if it belongs to ``family``; else a one-line error naming the ids that fit."""
    entry = get_entry(env_id)
    if entry.family != family:
        fitting = ", ".join(e.id for e in ENV_TABLE if e.family == family)
        raise SystemExit(f"{command} works on the {family} environments; {entry.id} is a {entry.family} one. "
                         f"Choose one of: {fitting}.")
    return entry.id


def command_envs(args: argparse.Namespace) -> None:
    width = max(len(entry.id) for entry in ENV_TABLE)
    for entry in ENV_TABLE:
        print(f"{entry.id:<{width}}  {entry.description}")


def command_pretrain(args: argparse.Namespace) -> None:
    """Pretrain (or load from the cache) the backbone of ENV_ID; print test accuracy per uniform width."""
    import gymnasium as gym
    import numpy as np
    import torch

    import prune_gym  # noqa: F401 - registers the ids
    from prune_gym.data import normalize
    from prune_gym.envs.rnp import final_rewards, step_rewards
    from prune_gym.pruning.runtime import uniform_decision
    from prune_gym.training import evaluate_classifier

    if get_entry(args.env_id).family == "MaskOffset":
        return pretrain_plain_network(args)
    require_family(args.env_id, "RNP", "pretrain")
    env = gym.make(args.env_id, **parse_env_kwargs(args.env_kwargs)).unwrapped
    runtime, dataset, settings = env.runtime, env.dataset, env.settings
    images, labels = dataset.split(args.split, settings.val_fraction)
    rows = []
    with torch.inference_mode():
        for action in range(runtime.k):
            decide = uniform_decision(action)
            scores = evaluate_classifier(lambda x, d=decide: runtime(x, d)[0], images, labels, dataset, runtime.device)
            # A uniform policy costs the same MACs on every image.
            macs = int(runtime(normalize(images[:1].to(runtime.device), dataset), decide)[1][0])
            # Mean episode return of "always action a": rewards are linear, so the sum over the
            # decided steps is the step reward of the summed actions and summed MACs.
            spent = np.array([macs - runtime.costs[0].macs()])
            mean_return = float(step_rewards(settings, np.array([action * runtime.num_decisions]), spent,
                                             runtime.macs_full)[0]
                                + final_rewards(settings, np.array([scores["cross_entropy"]]))[0])
            rows.append({"groups": action + 1, "accuracy": scores["accuracy"],
                         "cross_entropy": scores["cross_entropy"], "macs": macs,
                         "macs_fraction": macs / runtime.macs_full, "mean_return": mean_return})
    print(f"{args.env_id}: backbone {settings.backbone}, k={runtime.k}, {dataset.name} from {dataset.source}")
    print(f"pretraining: {env.pretrain_metrics}")
    print(f"{args.split} split ({len(labels)} images), every layer at the same width, "
          f"return under reward_mode={settings.reward_mode!r}:")
    print("| groups kept | accuracy | cross-entropy | MACs/image | MAC fraction | mean return |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['groups']}/{runtime.k} | {100 * row['accuracy']:.2f} % | {row['cross_entropy']:.3f} "
              f"| {row['macs'] / 1e6:.2f} M | {row['macs_fraction']:.3f} | {row['mean_return']:.3f} |")
    _write_json({"env_id": args.env_id, "split": args.split, "pretrain": env.pretrain_metrics, "widths": rows},
                args.json)


def pretrain_plain_network(args: argparse.Namespace) -> None:
    """``pretrain`` of a MaskOffset id: pretrain (or load) its CIFAR ResNet; print its accuracy."""
    import gymnasium as gym

    import prune_gym  # noqa: F401 - registers the ids

    env = gym.make(args.env_id, **parse_env_kwargs(args.env_kwargs)).unwrapped
    figures = env.pretrained_summary(args.split)
    print(f"{args.env_id}: {figures['network']} on {figures['dataset']} from {figures['source']}")
    print(f"pretraining: {figures['pretrain']}")
    print(f"{args.split} split ({figures['images']} images): accuracy {100 * figures['accuracy']:.2f} %, "
          f"cross-entropy {figures['cross_entropy']:.3f}, {figures['macs'] / 1e6:.2f} M MACs/image, "
          f"{figures['params'] / 1e6:.3f} M parameters")
    _write_json({"env_id": args.env_id, **figures}, args.json)


def default_backbone_request(env_id: str):
    """The backbone request of ``env_id`` with its registered kwargs (the settings' ``backbone_request()``)."""
    import gymnasium as gym

    import prune_gym  # noqa: F401 - registers the ids

    return gym.make(env_id, disable_env_checker=True).unwrapped.settings.backbone_request()


def command_ship_weights(args: argparse.Namespace) -> None:
    """Regenerate the pretrained weights shipped in the package (prune_gym/pretrained/): per
    configuration of the table, get the backbone (user cache, else trained now), measure test
    accuracy per width, write weights + manifest atomically, then rewrite the index."""
    from prune_gym import shipped
    from prune_gym.pretraining import ship_backbone

    directory = Path(args.out) if args.out else shipped.SHIPPED_DIR
    names = [config.name for config in shipped.SHIPPED_CONFIGS]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        raise SystemExit(f"ship-weights: unknown configuration(s) {unknown}; the table has: {', '.join(names)}.")
    if args.list:
        manifests = {manifest["name"]: manifest for _, manifest in shipped.shipped_manifests(directory)}
        for config in shipped.SHIPPED_CONFIGS:
            manifest = manifests.get(config.name)
            if manifest is None:
                state = "not shipped (cache or train)"
            elif shipped.find_shipped(default_backbone_request(config.env_id), directory) is None:
                state = "shipped but STALE: the env's default request changed; regenerate it"
            else:
                state = f"shipped ({manifest['file_bytes'] / 1e6:.2f} MB, {manifest['training_data']['file']})"
            print(f"{config.name:<24} {config.env_id:<24} {state}")
        return
    for config in shipped.SHIPPED_CONFIGS:
        if args.only and config.name not in args.only:
            continue
        manifest = ship_backbone(config, default_backbone_request(config.env_id), args.data_root, args.device,
                                 args.command_line, directory)
        print(f"{config.name}: wrote {manifest['weights_file']} ({manifest['file_bytes'] / 1e6:.2f} MB) and "
              f"{config.name}.json, trained on {manifest['training_data']['file']}")
        for evaluation in manifest["test_accuracy"]:
            widths = " / ".join(f"{100 * value:.2f}" for value in evaluation["accuracy_by_groups"].values())
            print(f"  test accuracy (%) at 1..k groups on {evaluation['file']} ({evaluation['images']} images): "
                  f"{widths}")
    print(f"wrote {shipped.write_index(directory)}")


def command_bench(args: argparse.Namespace) -> None:
    import prune_gym  # noqa: F401
    from prune_gym.bench import bench_rnp

    env_id = require_family(args.env_id, "RNP", "bench")
    if args.run_dir is not None:
        from prune_gym.agents.runs import load_rnp_decider, read_config

        config = read_config(args.run_dir)
        policy = f"run {args.run_dir} ({config['algo']}, greedy; its fine-tuned backbone)"

        def make_decider(env):
            return load_rnp_decider(args.run_dir, env)
    else:
        from prune_gym.agents.rnp_dqn import narrowest_width_decider

        policy = ("default: untrained rnp-dqn decision network (hidden 128, seed 0) with decoder bias +1000 on "
                  "1 group, so always the narrowest width; its time and MACs are measured and charged")

        def make_decider(env):
            return narrowest_width_decider(env.runtime)
    figures = bench_rnp(env_id, num_envs=args.num_envs, episodes=args.episodes,
                        env_kwargs=parse_env_kwargs(args.env_kwargs), make_decider=make_decider, policy=policy,
                        latency_images=args.latency_images, passes=args.passes, batch_size=args.batch_size)
    print(json.dumps(figures, indent=2))
    _write_json(figures, args.json)


def command_train(args: argparse.Namespace) -> None:
    """Train an agent into a run directory (config, checkpoints, metrics.csv, tensorboard, final model)."""
    from prune_gym.agents.runs import train_run

    if args.resume and args.out is None:
        raise SystemExit("--resume needs --out RUN_DIR (the run to continue).")
    if args.env_id is None and not args.resume:
        raise SystemExit("train needs ENV_ID (or --resume --out RUN_DIR).")
    # ENV_ID, --algo, --seed, --env-kwargs and --hyperparams left out (None, empty) mean "not given":
    # a new run takes the defaults, a resumed run its own values (given ones must agree with them).
    hyperparams = parse_env_kwargs(args.hyperparams)
    if args.num_envs is not None:
        if hyperparams.get("n_envs", args.num_envs) != args.num_envs:
            raise SystemExit(f"--num-envs {args.num_envs} and --hyperparams n_envs={hyperparams['n_envs']} disagree; "
                             "give one of them.")
        hyperparams["n_envs"] = args.num_envs
    run_dir = train_run(args.env_id, args.algo, timesteps=args.timesteps, seed=args.seed, out=args.out,
                        resume=args.resume, env_kwargs=parse_env_kwargs(args.env_kwargs), hyperparams=hyperparams,
                        ray=args.ray)
    print(f"run written to {run_dir}; evaluate it with `prune-gym evaluate {run_dir}`")


def command_evaluate(args: argparse.Namespace) -> None:
    """Run a trained policy greedily on the test split (or --eval-data) and print its figures."""
    from prune_gym.agents.evaluate import evaluate_run

    figures = evaluate_run(args.run_dir, split=args.split, eval_data=args.eval_data)
    print(json.dumps(figures, indent=2))
    _write_json(figures, args.json)


def command_compare(args: argparse.Namespace) -> None:
    """Every scripted policy (and agent) on ENV_ID over seeds; writes results.csv/.md, pareto.png."""
    from prune_gym.baselines.compare import compare, select_policies

    get_entry(args.env_id)
    if args.list:
        for policy in select_policies(args.env_id, args.policies):
            print(f"{policy.name:<14}  {policy.description}")
        return
    if args.report_only:
        from prune_gym.baselines.compare import report

        rows = report(args.out, args.env_id)
    else:
        rows = compare(args.env_id, policies=args.policies, agent_dirs=args.agents, seeds=args.seeds,
                       eval_data=args.eval_data, out=args.out, env_kwargs=parse_env_kwargs(args.env_kwargs),
                       overwrite=args.overwrite, ray=args.ray, resume=args.resume)
    print((Path(args.out) / "results.md").read_text())
    print(f"{Path(args.out) / 'results.csv'} holds {len(rows)} rows; wrote results.md and pareto.png beside it")


def add_ray_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--ray [ADDRESS]``: without an address a local Ray instance (Ray's own RAY_ADDRESS wins where set)."""
    from prune_gym.ray_support import LOCAL

    parser.add_argument("--ray", nargs="?", const=LOCAL, metavar="ADDRESS",
                        help=f"{what} on Ray: a local instance, or the cluster at ADDRESS (ray.init(address=...), "
                             "e.g. 10.0.0.5:6379 or auto); needs pip install \"prune-gym[ray]\"")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prune-gym", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    envs = commands.add_parser("envs", help="list every registered environment id")
    envs.set_defaults(run=command_envs)

    pretrain = commands.add_parser("pretrain", help="pretrain and cache an environment's backbone now (RNP and "
                                   "MaskOffset ids)")
    pretrain.add_argument("env_id")
    pretrain.add_argument("--split", default="test", choices=("train", "val", "test"),
                          help="split on which to report accuracy per width (default: test)")
    pretrain.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    pretrain.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    pretrain.set_defaults(run=command_pretrain)

    ship = commands.add_parser(
        "ship-weights", help="regenerate the pretrained weights shipped in the package (prune_gym/pretrained/)")
    ship.add_argument("--only", nargs="+", metavar="NAME", help="only these configurations (default: every one)")
    ship.add_argument("--data-root", help="data the backbones train on (default $PRUNE_GYM_DATA)")
    ship.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    ship.add_argument("--out", metavar="DIR", help="write here instead of the package's prune_gym/pretrained/")
    ship.add_argument("--list", action="store_true", help="only list the configurations and which are shipped")
    ship.set_defaults(run=command_ship_weights)

    bench = commands.add_parser("bench", help="throughput and latency figures of an RNP environment")
    bench.add_argument("env_id")
    bench.add_argument("--num-envs", type=int, default=256)
    bench.add_argument("--episodes", type=int, default=20, help="episodes of the native env to time")
    bench.add_argument("--run", dest="run_dir", metavar="RUN_DIR",
                       help="measure this trained run's policy (prune-gym train ... --algo rnp-dqn); default: an "
                            "untrained decision network of the default size that always picks 1 group")
    bench.add_argument("--batch-size", type=int, default=256, help="images per batch for the throughput figures")
    bench.add_argument("--latency-images", type=int, default=100, help="test images timed one at a time")
    bench.add_argument("--passes", type=int, default=5, help="timed passes (full and pruned alternate)")
    bench.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    bench.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    bench.set_defaults(run=command_bench)

    from prune_gym.agents import ALGORITHMS  # no torch, SB3 or YAML at import

    train = commands.add_parser("train", help="train an agent (custom rnp-dqn or Stable-Baselines3)")
    train.add_argument("env_id", nargs="?", help="registered env id (not needed with --resume)")
    train.add_argument("--algo", choices=ALGORITHMS, help="default rnp-dqn (with --resume: the run's)")
    train.add_argument("--timesteps", type=int,
                       help="transitions to train (default: the YAML's; with --resume a larger value trains longer)")
    train.add_argument("--seed", type=int, help="default 0 (with --resume: the run's)")
    train.add_argument("--out", help="run directory (default runs/ENV_ID-ALGO-sSEED)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    train.add_argument("--hyperparams", nargs="*", default=[], metavar="KEY=VALUE",
                       help="override the YAML's values (agents/hyperparams/ALGO.yml; for rnp-dqn, "
                            "its config dataclasses' defaults); checked before anything is written")
    train.add_argument("--num-envs", type=int, metavar="N",
                       help="sub-environments (the hyperparameter n_envs): N > 1 single envs step in N worker "
                            "processes (or Ray actors with --ray); on RNP ids, images per batched step")
    add_ray_argument(train, "step an SB3 algorithm's sub-environments as actors")
    train.set_defaults(run=command_train)

    evaluate = commands.add_parser("evaluate", help="accuracy, MACs and latency of a trained run")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--eval-data", metavar="FILE.npz", help="evaluate on x_test/y_test of this .npz instead")
    evaluate.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    evaluate.set_defaults(run=command_evaluate)

    compare = commands.add_parser("compare", help="run every scripted policy (and agents) over seeds; table + plot")
    compare.add_argument("env_id")
    compare.add_argument("--policies", default="all", help="'all' or comma-separated policy names (default: all)")
    compare.add_argument("--agents", nargs="*", default=[], metavar="RUN_DIR", help="trained agents' run directories")
    compare.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per policy (default: 1)")
    compare.add_argument("--eval-data", metavar="FILE.npz",
                         help="evaluate on this .npz's x_test/y_test instead of the test split")
    compare.add_argument("--out", default="compare", metavar="DIR",
                         help="output directory (default: ./compare); new rows are appended to an earlier "
                              "comparison's results.csv there")
    compare.add_argument("--overwrite", action="store_true",
                         help="replace the rows of runs (policy, seed) that DIR already holds instead of refusing")
    compare.add_argument("--resume", action="store_true",
                         help="skip the runs (policy, seed) that DIR already holds and run only the others: after a "
                              "kill, or to add agents or seeds to a comparison")
    compare.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    compare.add_argument("--list", action="store_true", help="only list the policies (name and description)")
    compare.add_argument("--report-only", action="store_true",
                         help="run nothing: rewrite DIR/results.md and DIR/pareto.png from DIR/results.csv")
    add_ray_argument(compare, "run every (policy, seed) as one task")
    compare.set_defaults(run=command_compare)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["prune-gym", *argv])
    logging.basicConfig(level=logging.INFO, format="prune-gym: %(message)s")
    try:
        args.run(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:  # the library's errors already say what to do; no traceback wall
        from gymnasium.error import UnregisteredEnv

        from prune_gym.data import DatasetNotFoundError
        from prune_gym.ray_support import RayUnavailableError

        if isinstance(error, (DatasetNotFoundError, UnregisteredEnv, ValueError, TypeError, FileNotFoundError,
                              FileExistsError, RayUnavailableError)):
            sys.exit(f"prune-gym: error: {error}")
        raise


if __name__ == "__main__":
    main()
