"""Run directories: ``prune-gym train`` writes one, ``prune-gym evaluate`` and ``compare`` read it.

A run directory holds::

    config.json        env id, algorithm, seed, env kwargs, the resolved hyperparameters, and
                       what the policy depends on (env id, dataset, backbone or network, k)
    metrics.csv        one row per iteration (rnp-dqn on RNP) or per finished episode
    tb/                tensorboard logs
    checkpoints/       rnp-dqn: latest.pt (everything to resume); SB3: model_<steps>_steps.zip (+ replay)
    final_model.pt     rnp-dqn: the Q-network (and on RNP the fine-tuned backbone)
    final_model.zip    SB3: the trained model

What is trusted: ``config.json`` is JSON, and every ``.pt`` file is loaded with
``torch.load(weights_only=True)`` — tensors and plain data only, so a run directory from elsewhere
cannot run code through them (SB3's own ``.zip``/``.pkl`` files are SB3's format). A damaged file is
a one-line :class:`RunFileError` naming it.

Starting and resuming: a start is validated (config, hyperparameters, env) before anything is
written, and a start that fails before its first checkpoint removes what it wrote. ``--resume``
continues a run exactly as it was started — a different env id, algorithm, seed, env kwarg or
hyperparameter is refused — except that a larger ``--timesteps`` trains it longer.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import pickle
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from prune_gym.agents import ALGORITHMS
from prune_gym.weights import atomic_torch_save, atomic_write

logger = logging.getLogger("prune_gym")

HYPERPARAMS_DIR = Path(__file__).resolve().parent / "hyperparams"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
DQN_CHECKPOINT = Path("checkpoints") / "latest.pt"
DEFAULT_ALGO = "rnp-dqn"
# What config.json must hold, and of which type.
CONFIG_KEYS: dict[str, type] = {"env_id": str, "algo": str, "seed": int, "env_kwargs": dict, "hyperparams": dict}
# What a trained policy depends on besides the env id: the kwargs that change the data it sees or
# the shape of what it acts on (an RNP agent for k=8 has 8 outputs; a DropNet agent, its network's).
IDENTITY_KEYS = ("dataset", "backbone", "network", "k")


class NotARunError(FileNotFoundError):
    """A directory given as a run has no ``config.json`` written by ``prune-gym train`` (or lacks a file)."""


class RunFileError(ValueError):
    """A run's file is empty, truncated, damaged, not what ``prune-gym train`` writes, or would run code."""


class RunMismatchError(ValueError):
    """A run is asked to act in an env other than the one it was trained on."""


class ResumeConflictError(ValueError):
    """``--resume`` was given settings that differ from the run's own."""


# ----------------------------------------------------------------------------------------------
# Hyperparameters (RL-zoo layout)
# ----------------------------------------------------------------------------------------------


def load_hyperparams(algo: str, env_id: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``default`` of ``hyperparams/<algo>.yml`` (where it has one), updated by the env id's entry,
    then by ``overrides``. The SB3 files' entries are complete (RL Zoo reads them as they stand, with
    ``default`` for ids without one), so for them this gives what ``rl_zoo3.train`` uses; rnp-dqn's
    file has no ``default``: its entries override its config dataclasses' defaults."""
    import yaml

    check_algorithm(algo)
    table = yaml.safe_load((HYPERPARAMS_DIR / f"{algo}.yml").read_text()) or {}
    values = dict(table.get("default", {}))
    values.update(table.get(bare_id(env_id), {}))
    values.update(overrides or {})
    return values


def check_algorithm(algo: str) -> None:
    if algo not in ALGORITHMS:
        raise ValueError(f"Unknown algorithm {algo!r}; valid: {', '.join(ALGORITHMS)}.")


def check_env_id(env_id: str) -> None:
    """A clear error for ids Gymnasium does not know (listing prune-gym's own)."""
    import prune_gym  # noqa: F401 - registers the ids
    from prune_gym.registry import env_ids

    if bare_id(env_id) not in gym.registry:
        raise ValueError(f"Unknown environment id {env_id!r}; prune-gym ids: {', '.join(env_ids())} "
                         "(any other registered Gymnasium id works too).")


def bare_id(env_id: str) -> str:
    """``"prune_gym:RNP-CIFAR10-v0"`` → ``"RNP-CIFAR10-v0"``."""
    return env_id.split(":", 1)[-1]


def timesteps_key(algo: str) -> str:
    """The hyperparameter that holds a run's length (transitions or env steps)."""
    return "timesteps" if algo == "rnp-dqn" else "n_timesteps"


@dataclass(frozen=True)
class CustomDQN:
    """One of the two agents ``--algo rnp-dqn`` runs; which one is decided by the env id's family."""

    config_class: type
    make_env: Callable[..., Any]
    trainer_class: type


def custom_dqn_for(env_id: str) -> CustomDQN:
    """RNP ids: the recurrent agent on the native batched env (:mod:`prune_gym.agents.rnp_dqn`);
    any other ``Discrete`` id: the MLP agent (:mod:`prune_gym.agents.dqn`)."""
    from prune_gym.registry import is_family

    if is_family(env_id, "RNP"):
        from prune_gym.agents import rnp_dqn

        return CustomDQN(rnp_dqn.RNPDQNConfig, rnp_dqn.make_training_env, rnp_dqn.RNPDQNTrainer)
    from prune_gym.agents import dqn

    return CustomDQN(dqn.DQNConfig, dqn.make_training_env, dqn.DQNTrainer)


def resolve_hyperparams(algo: str, env_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of a new run, checked: rnp-dqn's through its agent's config (defaults
    filled in), SB3's against the algorithm's constructor."""
    if algo == "rnp-dqn":
        return asdict(custom_dqn_for(env_id).config_class.from_dict(values))
    from prune_gym.agents.sb3 import constructor_kwargs

    constructor_kwargs(algo, values)
    return values


# ----------------------------------------------------------------------------------------------
# What a policy was trained on
# ----------------------------------------------------------------------------------------------


def env_identity(env: Any) -> dict[str, Any]:
    """The env id and, where the env has them, its dataset, backbone or network, and ``k``: what a
    trained policy depends on. Read from the env's settings (defaults included) or its spec."""
    unwrapped = getattr(env, "unwrapped", env)
    spec = getattr(unwrapped, "spec", None)
    declared = dict(spec.kwargs) if spec is not None else {}
    settings = getattr(unwrapped, "settings", None)
    identity: dict[str, Any] = {"env_id": bare_id(spec.id)} if spec is not None else {}
    for key in IDENTITY_KEYS:
        value = getattr(settings, key, declared.get(key))
        if value is not None:
            identity[key] = value
    return identity


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a run's policy was trained on: stored at training time; for runs written before that,
    derived from the registry's kwargs and the run's env kwargs."""
    if "env_identity" in config:
        return dict(config["env_identity"])
    from prune_gym.registry import get_entry

    try:
        registered = dict(get_entry(config["env_id"]).kwargs)
    except gym.error.UnregisteredEnv:  # a Gymnasium id such as CartPole-v1
        registered = {}
    declared = {**registered, **config["env_kwargs"]}
    return {"env_id": bare_id(config["env_id"]), **{key: declared[key] for key in IDENTITY_KEYS if key in declared}}


def describe_identity(identity: dict[str, Any]) -> str:
    """``RNP-CIFAR10-v0 (dataset=cifar10, backbone=cnn4, k=4)``."""
    details = ", ".join(f"{key}={identity[key]}" for key in IDENTITY_KEYS if key in identity)
    return f"{identity.get('env_id', 'an env')}" + (f" ({details})" if details else "")


def check_run_fits_env(run_dir: Path, config: dict[str, Any], env: Any) -> None:
    """Refuse to let a run act in an env whose id, dataset, backbone/network or ``k`` differ from
    those it was trained on (it would act on features it never saw, or fail on a size mismatch)."""
    trained, acting = run_identity(config), env_identity(env)
    from prune_gym.registry import arena_base

    if "env_id" in trained and arena_base(trained["env_id"]) == acting.get("env_id"):
        # Trained in an arena, acting in its base id: the same spaces and reward at the full budget.
        acting = {**acting, "env_id": trained["env_id"]}
    different = [key for key in trained if key in acting and trained[key] != acting[key]]
    if different:
        raise RunMismatchError(
            f"Run {run_dir} was trained on {describe_identity(trained)} and cannot act in "
            f"{describe_identity(acting)}: its {', '.join(different)} differ. Use it on {trained['env_id']} with the "
            f"env kwargs it was trained with ({config['env_kwargs'] or 'none'}), or train a run for this env.")


# ----------------------------------------------------------------------------------------------
# Run files
# ----------------------------------------------------------------------------------------------

_RESTORE = "Restore it from where the run came from, or train the run again into a new --out."


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``config.json``; a missing, empty, non-JSON or incomplete file is a one-line error."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise NotARunError(f"{run_dir} is not a prune-gym run directory (no {CONFIG_FILE}); "
                           "create one with `prune-gym train ENV_ID --algo ALGO --out DIR`.")
    try:
        config = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise RunFileError(f"Cannot read {path}: it is not text (a damaged or foreign file). {_RESTORE}") from None
    except json.JSONDecodeError as error:
        problem = "it is empty" if not path.read_text().strip() else f"it is not valid JSON ({error})"
        raise RunFileError(f"Cannot read {path}: {problem}. {_RESTORE}") from None
    wrong = [f"{key} ({kind.__name__})" for key, kind in CONFIG_KEYS.items()
             if not isinstance(config, dict) or not isinstance(config.get(key), kind)]
    if wrong:
        raise RunFileError(f"Cannot read {path}: it lacks {', '.join(wrong)}, which `prune-gym train` writes. "
                           f"{_RESTORE}")
    if config["algo"] not in ALGORITHMS:
        raise RunFileError(f"Cannot read {path}: its algo {config['algo']!r} is none of {', '.join(ALGORITHMS)}.")
    return config


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_text_atomically(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def write_text_atomically(path: Path, text: str) -> None:
    """Write through :func:`~prune_gym.weights.atomic_write`: a kill never leaves half a file."""
    atomic_write(path, lambda temporary: Path(temporary).write_text(text, newline=""))


def load_run_file(path: Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A checkpoint or model file of a run, loaded as tensors and plain data only
    (``torch.load(weights_only=True)``): nothing in it can run code. An empty, truncated, damaged
    or foreign file, or one holding other Python objects, is a one-line :class:`RunFileError`."""
    if not path.is_file():
        raise NotARunError(f"{path} is missing.")
    problem = None
    if path.stat().st_size == 0:
        problem = "it is empty (0 bytes)"
    elif not zipfile.is_zipfile(path):
        problem = "it is not a file written by torch.save (truncated, or another format)"
    else:
        try:
            with warnings.catch_warnings():  # torch's warnings about pickle protocols are not the user's business
                warnings.simplefilter("ignore")
                payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            problem = ("it holds Python objects other than tensors and plain data, and loading those could "
                       "run code; prune-gym refuses them")
        except Exception as error:  # noqa: BLE001 - a damaged archive fails in many ways; all mean the same
            problem = f"it is damaged ({type(error).__name__})"
        else:
            missing = [key for key in required if not isinstance(payload, dict) or key not in payload]
            if not missing:
                return payload
            problem = f"it lacks {', '.join(missing)}, which `prune-gym train` writes"
    raise RunFileError(f"Cannot load {path}: {problem}. {_RESTORE}")


def load_sb3_model(path: Path, algorithm: Any, **kwargs: Any) -> Any:
    """``algorithm.load(path, **kwargs)`` with a one-line error for an empty or damaged file."""
    if path.stat().st_size == 0:
        raise RunFileError(f"Cannot load {path}: it is empty (0 bytes). {_RESTORE}")
    try:
        return algorithm.load(path, **kwargs)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, RuntimeError, pickle.UnpicklingError) as error:
        reason = (str(error).splitlines() or [""])[0][:200]
        raise RunFileError(f"Cannot load {path} as a {algorithm.__name__} model ({type(error).__name__}: "
                           f"{reason}). {_RESTORE}") from None


# What load_state_dict raises for weights of another shape or a checkpoint with other keys.
NOT_FITTING_ERRORS = (RuntimeError, KeyError, TypeError, ValueError)


def load_into(module: Any, state: Any, path: Path) -> None:
    """``module.load_state_dict(state)``; contents of another shape are a :class:`RunFileError`."""
    try:
        module.load_state_dict(state)
    except NOT_FITTING_ERRORS as error:
        raise not_fitting(path, error) from None


def not_fitting(path: Path, error: Exception) -> RunFileError:
    """The one-line error for a run file whose contents do not fit what loads them."""
    reason = "; ".join(line.strip() for line in str(error).splitlines()[:3])[:300]
    return RunFileError(f"Cannot load {path}: its contents do not fit this run or env ({reason}). {_RESTORE}")


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def write_metrics_csv(rows: list[dict[str, float]], path: Path) -> None:
    """All of ``rows`` as ``path`` (replacing it atomically); columns in order of first appearance."""
    names: list[str] = []
    for row in rows:
        names.extend(name for name in row if name not in names)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=names)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(path, text.getvalue())


class MetricsAppender:
    """Appends rows to a run's ``metrics.csv`` as they come, each batch flushed to the file, so a
    killed run keeps them; a resumed run appends under the header already there."""

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.path = path
        self.columns = metrics_header(path) or list(columns)

    def __call__(self, rows: list[dict[str, float]]) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, restval="", extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)


def metrics_header(path: Path) -> list[str]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return next(csv.reader(handle), [])


def keep_metrics_through(path: Path, timesteps: int) -> None:
    """Drop the rows a killed run logged after ``timesteps`` (its last checkpoint): the resumed run
    plays those steps again and appends its own rows."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        names = list(reader.fieldnames or [])
        rows = [row for row in reader if float(row.get("timesteps") or math.inf) <= timesteps]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=names)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(path, text.getvalue())


# ----------------------------------------------------------------------------------------------
# Training a run
# ----------------------------------------------------------------------------------------------


def default_run_dir(env_id: str, algo: str, seed: int) -> Path:
    return Path("runs") / f"{bare_id(env_id)}-{algo}-s{seed}"


def train_run(env_id: str | None = None, algo: str | None = None, *, timesteps: int | None = None,
              seed: int | None = None, out: str | Path | None = None, resume: bool = False,
              env_kwargs: dict[str, Any] | None = None, hyperparams: dict[str, Any] | None = None,
              callback: Callable[..., bool] | None = None, ray: str | None = None) -> Path:
    """Train ``algo`` (default rnp-dqn) on ``env_id`` into a run directory; returns the directory.

    ``timesteps`` and ``hyperparams`` override the YAML values. With ``resume``, the run in ``out``
    continues from its last checkpoint; anything else given must agree with its ``config.json``,
    except a larger ``timesteps``, which trains it longer. ``callback`` is passed to the custom
    DQN's loop (tests use it to stop a run early, as a kill would). ``ray`` (``"local"`` or a
    cluster's address) steps an SB3 run's sub-environments as Ray actors
    (:class:`~prune_gym.agents.ray_vec_env.RayVecEnv`); it is how the run is executed, not part of
    its settings, so a run may be resumed with or without it and trains the same either way."""
    request = {"env_id": env_id or None, "algo": algo or None, "seed": seed, "env_kwargs": dict(env_kwargs or {}),
               "hyperparams": dict(hyperparams or {}), "timesteps": timesteps}
    if ray is None:
        return _train_or_resume(request, out, resume, callback, ray=False)
    if not resume and (request["algo"] or DEFAULT_ALGO) == "rnp-dqn":
        refuse_ray_for_custom_dqn()  # before starting Ray (a resumed run's algo is checked once its config is read)
    from prune_gym.ray_support import ray_session

    with ray_session(ray):
        return _train_or_resume(request, out, resume, callback, ray=True)


def refuse_ray_for_custom_dqn() -> None:
    raise ValueError(
        "--ray runs the sub-environments of an SB3 algorithm (--algo dqn, ppo, ppo_mask, a2c, sac, td3) as Ray "
        "actors; --algo rnp-dqn steps one env per iteration in this process (or RNP's natively batched env), so Ray "
        "has nothing to spread. Leave out --ray, or use e.g. --algo dqn --num-envs N --ray.")


def _train_or_resume(request: dict[str, Any], out: str | Path | None, resume: bool,
                     callback: Callable[..., bool] | None, ray: bool) -> Path:
    if resume:
        if out is None:
            raise ValueError("--resume needs --out RUN_DIR (the run to continue).")
        return _resume_run(Path(out), request, callback, ray)
    if request["env_id"] is None:
        raise ValueError("train needs ENV_ID (or --resume --out RUN_DIR).")
    algo, seed = request["algo"] or DEFAULT_ALGO, 0 if request["seed"] is None else request["seed"]
    run_dir = Path(out) if out is not None else default_run_dir(request["env_id"], algo, seed)
    _refuse_existing_run(run_dir)
    config = _new_run_config(request["env_id"], algo, seed, request["env_kwargs"], request["hyperparams"],
                             request["timesteps"])
    start = _prepare_training(run_dir, config, resume=False, callback=callback, ray=ray)
    with _removed_if_start_fails(run_dir, config["algo"]):
        write_config(run_dir, config)
        start()
    return run_dir


def _refuse_existing_run(run_dir: Path) -> None:
    if (run_dir / CONFIG_FILE).exists():
        hint = "" if has_checkpoint(run_dir) else " (no checkpoint yet: --resume starts it over with its settings)"
        raise FileExistsError(f"{run_dir} already holds a run{hint}; pass --resume to continue it or choose "
                              "another --out.")


def _new_run_config(env_id: str, algo: str, seed: int, env_kwargs: dict[str, Any], hyperparams: dict[str, Any],
                    timesteps: int | None) -> dict[str, Any]:
    """The ``config.json`` of a new run, every part checked; builds the env once (cheap: envs load
    data lazily) to check its kwargs and record what the policy will depend on."""
    check_algorithm(algo)
    check_env_id(env_id)
    overrides = dict(hyperparams)
    if timesteps is not None:
        overrides[timesteps_key(algo)] = timesteps
    values = resolve_hyperparams(algo, env_id, load_hyperparams(algo, env_id, overrides))
    env = gym.make(env_id, **env_kwargs)
    try:
        identity = env_identity(env)
    finally:
        env.close()
    return {"env_id": env_id, "algo": algo, "seed": seed, "env_kwargs": env_kwargs, "hyperparams": values,
            "env_identity": identity}


def _resume_run(run_dir: Path, request: dict[str, Any], callback: Callable[..., bool] | None, ray: bool) -> Path:
    config = read_config(run_dir)
    _refuse_conflicts(run_dir, config, request)
    config, longer = _with_requested_length(run_dir, config, request)
    if not has_checkpoint(run_dir):
        logger.info("%s has no checkpoint yet (it stopped before its first): starting it over with its settings.",
                    run_dir)
    elif not longer and any((run_dir / name).exists() for name in ("final_model.pt", "final_model.zip")):
        logger.info("%s has already finished; nothing to train (a larger --timesteps trains it longer).", run_dir)
    start = _prepare_training(run_dir, config, resume=True, callback=callback, ray=ray)
    if longer:
        write_config(run_dir, config)
    start()
    return run_dir


def _refuse_conflicts(run_dir: Path, config: dict[str, Any], request: dict[str, Any]) -> None:
    """``--resume`` continues a run as it was started: refuse anything given that differs."""
    conflicts = []
    if request["env_id"] is not None and bare_id(request["env_id"]) != bare_id(config["env_id"]):
        conflicts.append(f"ENV_ID {request['env_id']} (the run's: {config['env_id']})")
    if request["algo"] is not None and request["algo"] != config["algo"]:
        conflicts.append(f"--algo {request['algo']} (the run's: {config['algo']})")
    if request["seed"] is not None and request["seed"] != config["seed"]:
        conflicts.append(f"--seed {request['seed']} (the run's: {config['seed']})")
    for group, given, stored in (("--env-kwargs", request["env_kwargs"], config["env_kwargs"]),
                                 ("--hyperparams", request["hyperparams"], config["hyperparams"])):
        for name, value in given.items():
            if name == timesteps_key(config["algo"]) and group == "--hyperparams":
                continue  # the run's length: see _with_requested_length
            if name not in stored or stored[name] != value:
                conflicts.append(f"{group} {name}={value!r} (the run's: "
                                 f"{repr(stored[name]) if name in stored else 'not set'})")
    if conflicts:
        raise ResumeConflictError(
            f"--resume continues {run_dir} exactly as it was started, but got {'; '.join(conflicts)}. Leave out "
            "what differs to continue the run, or train a new run with another --out.")


def _with_requested_length(run_dir: Path, config: dict[str, Any], request: dict[str, Any]) -> tuple[dict, bool]:
    """The config with a larger requested length ("train longer"); a smaller one is refused.
    Returns the config and whether the length changed."""
    key = timesteps_key(config["algo"])
    from_hyperparams = request["hyperparams"].get(key)
    requested = request["timesteps"] if request["timesteps"] is not None else from_hyperparams
    if request["timesteps"] is not None and from_hyperparams is not None and from_hyperparams != request["timesteps"]:
        raise ResumeConflictError(f"--timesteps {request['timesteps']} and --hyperparams {key}={from_hyperparams} "
                                  "disagree; give one of them.")
    stored = config["hyperparams"][key]
    if requested is None or requested == stored:
        return config, False
    if not isinstance(requested, int) or isinstance(requested, bool):
        raise ResumeConflictError(f"--timesteps must be an integer number of timesteps, got {requested!r}.")
    if requested < stored:
        raise ResumeConflictError(
            f"{run_dir} was started for {stored} timesteps; --timesteps {requested} would shorten it, and a run "
            "cannot be shortened. Leave out --timesteps to finish it, or give a larger value to train it longer.")
    logger.info("Training %s longer: to %d timesteps instead of %d (its config.json is updated; the exploration "
                "schedule and checkpoints follow the new length, and final_model is replaced at the new end).",
                run_dir, requested, stored)
    return {**config, "hyperparams": {**config["hyperparams"], key: requested}}, True


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run saved anything to resume from (rnp-dqn's latest.pt or an SB3 checkpoint)."""
    from prune_gym.agents.sb3 import latest_checkpoint

    return (run_dir / DQN_CHECKPOINT).exists() or latest_checkpoint(run_dir) is not None


@contextlib.contextmanager
def _removed_if_start_fails(run_dir: Path, algo: str) -> Iterator[None]:
    """If a new run fails (or is interrupted) before its first checkpoint, remove what it wrote,
    so the corrected command can start it again in the same directory. Files that were in the
    directory before the start are never touched."""
    existed = run_dir.exists()
    before = set(run_dir.iterdir()) if existed else set()
    try:
        yield
    except BaseException:
        if run_dir.exists() and not has_checkpoint(run_dir):
            for path in set(run_dir.iterdir()) - before:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if not existed and not any(run_dir.iterdir()):
                run_dir.rmdir()
            logger.info("The start failed before its first checkpoint; removed what it wrote in %s.", run_dir)
        raise


def _prepare_training(run_dir: Path, config: dict[str, Any], resume: bool,
                      callback: Callable[..., bool] | None, ray: bool = False) -> Callable[[], None]:
    """Build the run's env, agent and (when resuming) its checkpoint — every check that can fail
    early — and return the function that trains it (and writes the run's files)."""
    if config["algo"] == "rnp-dqn":
        if ray:
            refuse_ray_for_custom_dqn()
        return CustomDQNTraining(run_dir, config, resume, callback).run
    from prune_gym.agents.sb3 import METRICS_COLUMNS, SB3Training, checkpoint_timesteps, latest_checkpoint

    resume_from = latest_checkpoint(run_dir) if resume else None
    training = SB3Training(config, run_dir, resume_from, load_sb3_model, ray=ray)

    def run() -> None:
        metrics = run_dir / METRICS_FILE
        if resume:
            keep_metrics_through(metrics, checkpoint_timesteps(resume_from) if resume_from is not None else 0)
        training.run(MetricsAppender(metrics, METRICS_COLUMNS))

    return run


class CustomDQNTraining:
    """An rnp-dqn run: the agent chosen by the env id's family, restored from ``latest.pt`` when
    resuming; :meth:`CustomDQNTraining.run` trains it with checkpoints, metrics and tensorboard in the run directory."""

    def __init__(self, run_dir: Path, config: dict[str, Any], resume: bool, callback: Callable[..., bool] | None):
        agent = custom_dqn_for(config["env_id"])
        dqn_config = agent.config_class.from_saved(config["hyperparams"])
        self.env = agent.make_env(config["env_id"], config["env_kwargs"], dqn_config)
        self.trainer = agent.trainer_class(self.env, dqn_config, seed=config["seed"])
        self.run_dir, self.resume, self.callback = run_dir, resume, callback
        self.checkpoint_path = run_dir / DQN_CHECKPOINT
        if resume and self.checkpoint_path.exists():
            load_into(self.trainer, load_run_file(self.checkpoint_path), self.checkpoint_path)

    def run(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        trainer, run_dir = self.trainer, self.run_dir
        # purge_step drops tensorboard points a killed run logged after its last checkpoint.
        writer = SummaryWriter(str(run_dir / "tb"), purge_step=trainer.iteration if self.resume else None)
        logged = len(trainer.metrics)

        def save(current: Any) -> None:
            nonlocal logged
            for row in current.metrics[logged:]:
                step = int(row.get("transitions", row.get("iteration", 0)))
                for name, value in row.items():
                    if isinstance(value, float) and not math.isnan(value):
                        writer.add_scalar(f"rnp_dqn/{name}", value, step)
            logged = len(current.metrics)
            writer.flush()
            atomic_torch_save(current.state_dict(), self.checkpoint_path)
            write_metrics_csv(current.metrics, run_dir / METRICS_FILE)

        try:
            trainer.train(callback=self.callback, checkpoint=save)
        finally:
            writer.close()
        if trainer.iteration == trainer.total_iterations:
            atomic_torch_save(trainer.final_model(), run_dir / "final_model.pt")


# ----------------------------------------------------------------------------------------------
# Reading a run
# ----------------------------------------------------------------------------------------------


def _final_model_path(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.exists():
        raise NotARunError(f"{run_dir} has no {name}: the run has not finished; continue it with "
                           f"`prune-gym train --resume --out {run_dir}`.")
    return path


def _load_final_dqn_model(run_dir: Path, required: tuple[str, ...]) -> tuple[dict[str, Any], int, Path]:
    """``final_model.pt`` of an rnp-dqn run, its network's hidden size and its path."""
    path = _final_model_path(run_dir, "final_model.pt")
    final = load_run_file(path, required=("online", "config", *required))
    hidden_size = final["config"].get("hidden_size") if isinstance(final["config"], dict) else None
    if not isinstance(hidden_size, int) or hidden_size < 1:
        raise RunFileError(f"Cannot load {path}: its config has no valid hidden_size ({hidden_size!r}). {_RESTORE}")
    return final, hidden_size, path


def _load_final_sb3_model(run_dir: Path, config: dict[str, Any]) -> Any:
    from prune_gym.agents.sb3 import SB3_ALGORITHMS

    path = _final_model_path(run_dir, "final_model.zip")
    return load_sb3_model(path, SB3_ALGORITHMS[config["algo"]], device="cpu")


def load_rnp_decider(run_dir: str | Path, env: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The trained policy of an RNP run as a batched decision function (numpy obs → actions); for
    rnp-dqn runs also loads the run's fine-tuned backbone into ``env``. A run trained on another
    env (id, dataset, backbone, k) is refused."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    check_run_fits_env(run_dir, config, env)
    if config["algo"] == "rnp-dqn":
        from prune_gym.agents.rnp_dqn import decider_from_final_model

        final, hidden_size, path = _load_final_dqn_model(run_dir, required=("backbone",))
        try:
            return decider_from_final_model(final, env, hidden_size)
        except NOT_FITTING_ERRORS as error:
            raise not_fitting(path, error) from None
    return SB3Decider(_load_final_sb3_model(run_dir, config), env.runtime.observation_size,
                      env.runtime.num_decisions)


class SB3Decider:
    """An SB3 model's greedy actions as a batched RNP decision function, with its cost per image:
    the linear layers its ``predict`` runs for one observation (the policy's MLP; PPO's value head is
    not run when acting), counted once by tracing, times the ``decisions`` per image.

    A ``ppo_mask`` model predicts here without masks, and that is exact, not an approximation: RNP's
    ``action_masks()`` are all true for every image at every layer (every group count is always
    valid, :meth:`prune_gym.envs.rnp.RNPVectorEnv.action_masks`), and MaskablePPO reads an absent
    mask as "every action valid" — the masks it trained with."""

    def __init__(self, model: Any, observation_size: int, decisions: int):
        from prune_gym.pruning.counting import trace_layer_costs

        self.model = model
        observation = np.zeros((1, observation_size), dtype=np.float32)
        costs = trace_layer_costs(model.policy, None, run=lambda: model.predict(observation, deterministic=True))
        self.decision_macs = decisions * sum(cost.macs() for cost in costs)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(obs, deterministic=True)[0], dtype=np.int64)


def load_agent_policy(run_dir: str | Path) -> Any:
    """A trained run as a :class:`prune_gym.policies.ScriptedPolicy` (``make(env) -> policy(obs, info)``),
    so ``prune-gym compare --agents`` treats it like any scripted policy. The policy also has a
    ``decide_batch(obs)`` method where the env family evaluates many images at once (RNP).
    ``make`` refuses an env other than the one the run was trained on (id, dataset, backbone, k)."""
    from prune_gym.policies import BatchPolicy, ScriptedPolicy, agent_policy_name
    from prune_gym.registry import family_of, is_family

    run_dir = Path(run_dir)
    config = read_config(run_dir)

    def make(env: gym.Env) -> Any:
        unwrapped = env.unwrapped
        if is_family(config["env_id"], "RNP"):
            return BatchPolicy(load_rnp_decider(run_dir, unwrapped))
        check_run_fits_env(run_dir, config, unwrapped)
        if config["algo"] == "rnp-dqn":
            from prune_gym.agents.dqn import DQNConfig, greedy_policy, q_network_for

            final, hidden_size, path = _load_final_dqn_model(run_dir, required=())
            network = q_network_for(unwrapped, hidden_size)
            load_into(network, final["online"], path)
            masked = DQNConfig.from_saved(final["config"]).action_masks
            return greedy_policy(network.eval(), unwrapped if masked else None)
        from prune_gym.agents.sb3 import MASKED_ALGORITHMS, greedy_policy

        model = _load_final_sb3_model(run_dir, config)
        return greedy_policy(model, unwrapped if config["algo"] in MASKED_ALGORITHMS else None)

    name = agent_policy_name(config["algo"], run_dir.name)
    try:
        family = family_of(config["env_id"])
    except gym.error.UnregisteredEnv:  # a Gymnasium id (CartPole-v1) is a family of its own
        family = config["env_id"]
    return ScriptedPolicy(family, name, f"trained {config['algo']} run {run_dir}", make)
