"""Throughput and latency figures of the RNP environments (``prune-gym bench``).

A "step" is one sub-environment transition (one image through one decided layer). Every figure
is measured in one run, so ratios compare like with like on a shared, noisy machine:

* ``native_steps_per_s``: the native ``RNPVectorEnv`` (``gym.make_vec`` with the vector entry point);
* ``sync_steps_per_s``: ``gymnasium.vector.SyncVectorEnv`` over ``gym.make`` single envs;
* ``raw_compute_steps_per_s``: the same sliced convolutions called directly (normalise, first
  layer, decided layers, classifier), no observations, rewards or bookkeeping;
* batch-1 latency of :class:`RuntimePrunedNet` at full width and at uniform 1 of k groups, and
  of the same kernels run statically (``forward_static``: no observations, decisions or
  accounting), which is the floor for any per-image decision path on this machine.

All three throughputs replay the same pre-drawn random actions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from prune_gym.data import normalize
from prune_gym.pruning.runtime import RuntimePrunedNet, uniform_decision

# Targets of the foundation issue, checked (not asserted) in the output.
TARGET_NATIVE_OVER_SYNC = 20.0
TARGET_NATIVE_OVER_RAW = 0.67
TARGET_LATENCY_OVER_MACS = 0.7


def _steps_per_second(venv, actions: np.ndarray, seed: int) -> float:
    venv.reset(seed=seed)
    for warmup in actions[:2]:
        venv.step(warmup)
    started = time.perf_counter()
    for batch in actions:
        venv.step(batch)
    return actions.size / (time.perf_counter() - started)


def _raw_compute_steps_per_second(runtime: RuntimePrunedNet, images, dataset, actions: np.ndarray, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    decisions = runtime.num_decisions
    with torch.inference_mode():
        started = time.perf_counter()
        for step, batch_actions in enumerate(actions):
            layer = step % decisions
            if layer == 0:
                rows = torch.randint(len(images), (actions.shape[1],), generator=generator).to(images.device)
                h, widths, _ = runtime.stem(normalize(images[rows], dataset))
            h, widths, _ = runtime.layer(layer + 1, h, widths, batch_actions + 1)
            if layer == decisions - 1:
                runtime.head(h, widths)
        return actions.size / (time.perf_counter() - started)


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    timings = []
    with torch.inference_mode():
        for _ in range(10):
            run()
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings)


def check_bench_counts(**counts: int) -> None:
    """Raise a ValueError naming the first count that is not an integer ≥ 1 (with its
    ``prune-gym bench`` flag where it has one)."""
    flags = {"num_envs": " (--num-envs)", "episodes": " (--episodes)"}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}{flags.get(name, '')} must be an integer ≥ 1: every figure is a rate over "
                             f"at least one of them. Got {value!r}.")


def bench_rnp(
    env_id: str = "RNP-CIFAR10-v0",
    num_envs: int = 256,
    episodes: int = 20,
    sync_episodes: int = 3,
    latency_repeats: int = 300,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure the RNP figures for ``env_id`` (see the module docstring); returns a JSON-ready dict.

    Raises:
        ValueError: a count below 1 (nothing would be timed; rates would divide by zero).
    """
    check_bench_counts(num_envs=num_envs, episodes=episodes, sync_episodes=sync_episodes,
                       latency_repeats=latency_repeats)
    env_kwargs = dict(env_kwargs or {})
    native = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **env_kwargs)
    runtime, dataset = native.unwrapped.runtime, native.unwrapped.dataset
    images, _ = native.unwrapped.split_data()
    decisions, k = runtime.num_decisions, runtime.k
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, k, size=(episodes * decisions, num_envs))

    native_rate = _steps_per_second(native, actions, seed)
    sync = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **env_kwargs)
    sync_rate = _steps_per_second(sync, actions[: sync_episodes * decisions], seed)
    raw_rate = _raw_compute_steps_per_second(runtime, images, dataset, actions, seed)

    image = normalize(images[:1], dataset)
    latency_full = _median_ms(lambda: runtime(image, uniform_decision(k - 1)), latency_repeats)
    latency_pruned = _median_ms(lambda: runtime(image, uniform_decision(0)), latency_repeats)
    static_full = _median_ms(lambda: runtime.forward_static(image, k), latency_repeats)
    static_pruned = _median_ms(lambda: runtime.forward_static(image, 1), latency_repeats)
    macs_pruned = int(runtime(image, uniform_decision(0))[1][0])
    macs_ratio = runtime.macs_full / macs_pruned
    native.close()
    sync.close()
    figures = {
        "env_id": env_id,
        "num_envs": num_envs,
        "torch_threads": torch.get_num_threads(),
        "device": str(runtime.device),
        "native_steps_per_s": round(native_rate),
        "sync_steps_per_s": round(sync_rate),
        "raw_compute_steps_per_s": round(raw_rate),
        "native_over_sync": round(native_rate / sync_rate, 2),
        "native_over_raw": round(native_rate / raw_rate, 3),
        "latency_full_ms": round(latency_full, 4),
        "latency_pruned_ms": round(latency_pruned, 4),
        "latency_speedup": round(latency_full / latency_pruned, 3),
        "static_latency_full_ms": round(static_full, 4),
        "static_latency_pruned_ms": round(static_pruned, 4),
        "static_latency_speedup": round(static_full / static_pruned, 3),
        "macs_full": runtime.macs_full,
        "macs_pruned": macs_pruned,
        "macs_ratio": round(macs_ratio, 3),
    }
    figures["latency_speedup_over_macs_ratio"] = round(figures["latency_speedup"] / macs_ratio, 3)
    figures["targets_met"] = {
        f"native_over_sync>={TARGET_NATIVE_OVER_SYNC}": figures["native_over_sync"] >= TARGET_NATIVE_OVER_SYNC,
        f"native_over_raw>={TARGET_NATIVE_OVER_RAW}": figures["native_over_raw"] >= TARGET_NATIVE_OVER_RAW,
        f"latency_speedup>={TARGET_LATENCY_OVER_MACS}*macs_ratio":
            figures["latency_speedup_over_macs_ratio"] >= TARGET_LATENCY_OVER_MACS,
    }
    return figures
