"""Shared fixtures: a private weights cache per test session, cheap kwargs for every env id, and
the location of the real data subsets (tests that need them skip where they are absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import prune_gym  # noqa: F401 - registers the ids
from prune_gym.registry import get_entry, ids_of_family

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
requires_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "cifar10-subset.npz").is_file(),
    reason=f"real data subsets not found at {SHARED_DATA} (a fresh clone without ../shared/data)",
)

# Layout-correct stand-ins for each real dataset, so checker tests of every registered id run
# everywhere in seconds. Accuracy figures never come from these (see test_real_data.py).
_LAYOUTS = {"cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "mnist": ((1, 28, 28), 10)}


def write_fake_npz(path: Path, dataset: str, train_size: int = 64, test_size: int = 16) -> Path:
    shape, classes = _LAYOUTS[dataset]
    rng = np.random.default_rng(0)
    np.savez(path,
             x_train=rng.integers(0, 256, (train_size, *shape), dtype=np.uint8),
             y_train=np.arange(train_size, dtype=np.int64) % classes,
             x_test=rng.integers(0, 256, (test_size, *shape), dtype=np.uint8),
             y_test=np.arange(test_size, dtype=np.int64) % classes)
    return path


@pytest.fixture(autouse=True, scope="session")
def private_weights_cache(tmp_path_factory):
    """Keep test runs out of the user's ~/.cache and independent of earlier runs."""
    patcher = pytest.MonkeyPatch()
    patcher.setenv("PRUNE_GYM_CACHE", str(tmp_path_factory.mktemp("weights")))
    # One thread unless OMP_NUM_THREADS says otherwise: the tests' batches are tiny, where a second
    # thread costs more than it gives, and while other jobs share the 2 cores a second thread made
    # MaskOffset's pruning-models (grouped convolutions) 7-12x slower: 66.8 ms per forward and
    # backward on 1 thread against 811.8 ms on 2 (channels_last, batch 4, measured in one run), which
    # stalled a CI run in the ResNet-56 checker test. Worker processes (SubprocVecEnv, Ray) inherit it.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    yield
    patcher.undo()


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fake-data")
    for dataset in _LAYOUTS:
        write_fake_npz(directory / f"{dataset}.npz", dataset)
    return directory


# Per family: kwargs that make a step take milliseconds (tiny budgets, few optimiser steps).
_CHEAP_BY_FAMILY = {
    # fp32 even where the id registers bf16 (cnn6, cnn8): on a CPU without AVX-512 BF16 the
    # emulated bf16 made these two tiny pretrainings take 92 and 136 s of the suite.
    "RNP": {"pretrain_steps": 2, "pretrain_precision": "fp32"},
    "DropNet": {"max_epochs": 1, "patience": 1, "max_cycles": 3},  # one epoch per training, a few cycles
    "LayerPrune": {"width": 8, "max_layers": 3, "epochs": 3, "iterations_per_step": 2, "batch_size": 16},
    "AlphaBlend": {"pretrain_steps": 2, "budget_steps": 3, "iterations_per_step": 2, "batch_size": 16},
    "MaskOffset": {"pretrain_steps": 1, "pretrain_batch_size": 4, "max_iter": 2, "iterations_per_step": 1,
                   "batch_size": 4, "finetune_iterations": 1, "val_images": 8},
}


def cheap_kwargs(env_id: str, fake_data_dir: Path) -> dict:
    """Kwargs that make ``env_id`` construct, pretrain and step in seconds."""
    entry = get_entry(env_id)
    kwargs = {**_CHEAP_BY_FAMILY[entry.family], "device": "cpu"}
    if entry.kwargs.get("pool_before"):  # LayerPrune-CIFAR10-v2: enough layers for its stage boundaries
        kwargs["max_layers"] = max(kwargs["max_layers"], *entry.kwargs["pool_before"])
    if entry.kwargs.get("dataset") != "synthetic":
        kwargs["data_root"] = str(fake_data_dir)
    return kwargs


RNP_IDS = ids_of_family("RNP")
DROPNET_IDS = ids_of_family("DropNet")
LAYERPRUNE_IDS = ids_of_family("LayerPrune")
ALPHABLEND_IDS = ids_of_family("AlphaBlend")
MASKOFFSET_IDS = ids_of_family("MaskOffset")


def play(env, actions, seed):
    """``reset(seed)`` then ``step`` each action: the list of what every call returned."""
    trace = [env.reset(seed=seed)]
    for action in actions:
        trace.append(env.step(action))
    return trace


def count_pretrain_calls(monkeypatch) -> list:
    """A list that gains an entry every time a backbone is pretrained (not loaded from a cache)."""
    from prune_gym import pretraining

    calls: list = []
    original = pretraining.pretrain_grouped_cnn

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(pretraining, "pretrain_grouped_cnn", counted)
    return calls
