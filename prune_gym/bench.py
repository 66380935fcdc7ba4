"""Throughput and latency figures of the RNP environments and of their deployed pruned network
(``prune-gym bench``).

Every figure is measured in one run, so ratios compare like with like on a shared, noisy machine.

Environment throughput (a "step" is one sub-environment transition: one image through one decided
layer), all replaying the same pre-drawn random actions:

* ``native_steps_per_s``: the native ``RNPVectorEnv`` (``gym.make_vec`` with the vector entry point);
* ``sync_steps_per_s``: ``gymnasium.vector.SyncVectorEnv`` over ``gym.make`` single envs;
* ``raw_compute_steps_per_s``: the same sliced convolutions called directly (normalise, first
  layer, decided layers, classifier), no observations, rewards or bookkeeping.

Deployment, under a decision function ``decide`` (``policy`` in the output says which; the default
is ``uniform-1``, no decision network; ``prune-gym bench`` passes a decision network, see its help):

* ``latency_full_ms`` / ``latency_pruned_ms``: median per-image milliseconds at batch 1 through
  :class:`~prune_gym.pruning.deploy.SingleImagePath` at full width / under ``decide`` (decision
  network included), over ``latency_images`` test images, with ``latency_threads`` torch threads;
* ``batched_throughput_full`` / ``batched_throughput_pruned``: images per second of
  :meth:`RuntimePrunedNet.forward` on batches of ``batch_size`` test images;
* ``macs_ratio``: full MACs ÷ the policy's mean MACs per image on the latency images, the decision
  network's own (``decision_macs``) included; ``macs_ratio_backbone`` leaves them out.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from prune_gym.data import normalize
from prune_gym.pruning.deploy import SingleImagePath, batch1_ms
from prune_gym.pruning.runtime import DecisionFunction, RuntimePrunedNet, decision_macs, uniform_decision

# Targets, checked (not asserted) in the output: issue 10's batch-1 speed-up at ≥ 3× fewer MACs
# and batched throughput ratio relative to the MAC ratio, and the foundation issue's env overhead.
TARGET_NATIVE_OVER_RAW = 0.67
TARGET_LATENCY_SPEEDUP = 1.5
TARGET_LATENCY_MIN_MACS_RATIO = 3.0
TARGET_THROUGHPUT_OVER_MACS = 0.6


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


def check_bench_counts(**counts: int) -> None:
    """Raise a ValueError naming the first count that is not an integer ≥ 1 (with its
    ``prune-gym bench`` flag where it has one)."""
    flags = {"num_envs": " (--num-envs)", "episodes": " (--episodes)", "batch_size": " (--batch-size)",
             "latency_images": " (--latency-images)", "passes": " (--passes)"}
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}{flags.get(name, '')} must be an integer ≥ 1: every figure is a rate over "
                             f"at least one of them. Got {value!r}.")


def _images_per_second(runtime: RuntimePrunedNet, decide: DecisionFunction, inputs: torch.Tensor,
                       passes: int) -> float:
    """Median over ``passes`` of images per second of one batched forward of ``inputs``."""
    timings = []
    with torch.inference_mode():
        runtime(inputs, decide)
        for _ in range(passes):
            started = time.perf_counter()
            runtime(inputs, decide)
            timings.append(time.perf_counter() - started)
    return len(inputs) / statistics.median(timings)


def bench_deployment(runtime: RuntimePrunedNet, decide: DecisionFunction, images: torch.Tensor, dataset: Any,
                     latency_images: int = 100, passes: int = 5, batch_size: int = 256,
                     latency_threads: int | None = 1) -> dict[str, Any]:
    """Batch-1 latency, batched throughput and MACs of ``runtime`` at full width and under ``decide``
    (see the module docstring). Full and pruned runs alternate pass by pass, so a change in the
    machine's load hits both alike."""
    check_bench_counts(latency_images=latency_images, passes=passes, batch_size=batch_size)
    full = uniform_decision(runtime.k - 1)
    latency_inputs = normalize(images[:latency_images].to(runtime.device), dataset)
    batch = normalize(images[:batch_size].to(runtime.device), dataset)
    full_path, pruned_path = SingleImagePath(runtime, full), SingleImagePath(runtime, decide)
    threads = torch.get_num_threads()
    full_ms, pruned_ms = [], []
    try:
        if latency_threads:
            torch.set_num_threads(latency_threads)
        for _ in range(passes):
            full_ms.append(batch1_ms(full_path, latency_inputs))
            pruned_ms.append(batch1_ms(pruned_path, latency_inputs))
    finally:
        torch.set_num_threads(threads)
    full_rate, pruned_rate = [], []
    for _ in range(passes):
        full_rate.append(_images_per_second(runtime, full, batch, 1))
        pruned_rate.append(_images_per_second(runtime, decide, batch, 1))
    with torch.inference_mode():
        _, backbone_macs, chosen = runtime(latency_inputs, decide)
    deciding = decision_macs(decide)
    macs_pruned = float(backbone_macs.mean()) + deciding
    latency_full, latency_pruned = statistics.median(full_ms), statistics.median(pruned_ms)
    throughput_full, throughput_pruned = statistics.median(full_rate), statistics.median(pruned_rate)
    macs_ratio = runtime.macs_full / macs_pruned
    return {
        "latency_threads": latency_threads or threads,
        "latency_images": len(latency_inputs),
        "latency_full_ms": round(latency_full, 4),
        "latency_pruned_ms": round(latency_pruned, 4),
        "latency_speedup": round(latency_full / latency_pruned, 3),
        "batch_size": len(batch),
        "batched_throughput_full": round(throughput_full, 1),
        "batched_throughput_pruned": round(throughput_pruned, 1),
        "throughput_speedup": round(throughput_pruned / throughput_full, 3),
        "macs_full": runtime.macs_full,
        "macs_pruned": round(macs_pruned),
        "decision_macs": deciding,
        "macs_ratio": round(macs_ratio, 3),
        "macs_ratio_backbone": round(runtime.macs_full / float(backbone_macs.mean()), 3),
        "throughput_speedup_over_macs_ratio": round(throughput_pruned / throughput_full / macs_ratio, 3),
        "groups_mean": [round(float(value), 3) for value in chosen.mean(axis=0)],
    }


def bench_rnp(
    env_id: str = "RNP-CIFAR10-v0",
    num_envs: int = 256,
    episodes: int = 20,
    sync_episodes: int = 3,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    make_decider: Callable[[Any], DecisionFunction] | None = None,
    policy: str | None = None,
    latency_images: int = 100,
    passes: int = 5,
    batch_size: int = 256,
    latency_threads: int | None = 1,
) -> dict[str, Any]:
    """Measure the figures of the module docstring for ``env_id``; returns a JSON-ready dict.

    Args:
        make_decider: ``make_decider(env) -> decide`` for the deployment figures, given a fresh
            unwrapped env of ``env_id`` (a trained run may load its fine-tuned backbone into it);
            ``None``: ``uniform-1`` (every decided layer at 1 group, no decision network).
        policy: how the output names that decision function.
        latency_threads: torch threads for the batch-1 figures (``None``: leave as is). One
            thread by default: at batch 1 a second thread only adds synchronisation, and on a
            shared two-core machine it waits for the other job.

    Raises:
        ValueError: a count below 1 (nothing would be timed; rates would divide by zero).
    """
    check_bench_counts(num_envs=num_envs, episodes=episodes, sync_episodes=sync_episodes)
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
    native.close()
    sync.close()

    single = gym.make(env_id, **env_kwargs).unwrapped
    decide = make_decider(single) if make_decider is not None else uniform_decision(0)
    test_images, _ = single.dataset.split("test", single.settings.val_fraction)
    deployment = bench_deployment(single.runtime, decide, test_images, single.dataset, latency_images, passes,
                                  batch_size, latency_threads)
    figures = {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "policy": policy or ("uniform-1: every decided layer at 1 group, no decision network" if make_decider is None
                             else repr(decide)),
        "num_envs": num_envs,
        "torch_threads": torch.get_num_threads(),
        # glibc's malloc settings shape batched CPU timings (see runtime.CONV_CHUNK_BYTES): recorded.
        "malloc_env": {name: value for name, value in sorted(os.environ.items()) if name.startswith("MALLOC_")},
        # So is the CPU's vector extension: the batch-1 speed-up moved from 1.72× (AVX-512) to
        # 1.12× (AVX2-only) for the same cnn4 figures (README, "Throughput and latency").
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(runtime.device),
        "native_steps_per_s": round(native_rate),
        "sync_steps_per_s": round(sync_rate),
        "raw_compute_steps_per_s": round(raw_rate),
        "native_over_sync": round(native_rate / sync_rate, 2),
        "native_over_raw": round(native_rate / raw_rate, 3),
        **deployment,
    }
    figures["targets_met"] = {
        f"native_over_raw>={TARGET_NATIVE_OVER_RAW}": figures["native_over_raw"] >= TARGET_NATIVE_OVER_RAW,
        f"latency_speedup>={TARGET_LATENCY_SPEEDUP} at macs_ratio>={TARGET_LATENCY_MIN_MACS_RATIO}":
            figures["latency_speedup"] >= TARGET_LATENCY_SPEEDUP
            and figures["macs_ratio"] >= TARGET_LATENCY_MIN_MACS_RATIO,
        f"throughput_speedup>={TARGET_THROUGHPUT_OVER_MACS}*macs_ratio":
            figures["throughput_speedup_over_macs_ratio"] >= TARGET_THROUGHPUT_OVER_MACS,
    }
    return figures

