"""What the training-time environments share: data splits, the per-step training helper and the
common accounting in ``info``.

A training-time environment (LayerPrune, AlphaBlend) trains a network for a configurable number of
optimiser steps per environment step. Everything here is used by both; the networks, actions and
rewards live in the family modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prune_gym.data import ImageDataset, load_dataset, load_npz
from prune_gym.pruning.counting import count_macs, count_params
from prune_gym.training import augment_batch, evaluate_classifier, train_loop

# Keys of the accounting every environment reports in ``info`` (the comparison script reads them).
ACCOUNTING_KEYS = ("macs", "macs_full", "params", "params_full", "val_accuracy", "val_loss", "cycle")


@dataclass
class SplitData:
    """uint8 images and int64 labels of the splits a training-time environment uses (on its device).

    ``train`` is the training split, optionally cut to a fixed subset; ``test`` is the dataset's
    test split or the images of ``eval_data``.
    """

    dataset: ImageDataset
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_split_data(
    dataset_name: str,
    data_root: str | None,
    val_fraction: float,
    train_subset: int | None,
    eval_data: str | None,
    device: torch.device,
) -> SplitData:
    """The train/validation/test images of ``dataset_name``.

    Args:
        val_fraction: fraction of the training images held out for validation (seeded, fixed).
        train_subset: keep only this many training images (a fixed, seeded choice, the same in every
            episode) to make steps cheap; ``None`` keeps all of them.
        eval_data: an ``.npz`` in the shared layout whose ``x_test``/``y_test`` replace the test split.
    """
    dataset = load_dataset(dataset_name, data_root)
    x_train, y_train = dataset.split("train", val_fraction)
    if train_subset is not None:
        if train_subset < 1:
            raise ValueError(f"train_subset must be ≥ 1 (or None for all images), got {train_subset}.")
        chosen = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(0))[:train_subset].sort().values
        x_train, y_train = x_train[chosen], y_train[chosen]
    x_val, y_val = dataset.split("val", val_fraction)
    if eval_data is not None:
        held_out = load_npz(eval_data, dataset.name)
        x_test, y_test = held_out.x_test, held_out.y_test
    else:
        x_test, y_test = dataset.split("test")
    return SplitData(dataset, *(tensor.to(device) for tensor in (x_train, y_train, x_val, y_val, x_test, y_test)))


class EpochBatches:
    """Minibatches of a fixed training set, each epoch in a fresh random order from ``generator``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator):
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}.")
        self.images, self.labels, self.generator = images, labels, generator
        self.batch_size = min(batch_size, len(labels))
        self._order = torch.empty(0, dtype=torch.int64)

    @property
    def iterations_per_epoch(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next uint8 batch and its labels."""
        if len(self._order) == 0:
            self._order = torch.randperm(len(self.labels), generator=self.generator)
        rows, self._order = self._order[: self.batch_size], self._order[self.batch_size:]
        rows = rows.to(self.labels.device)
        return self.images[rows], self.labels[rows]


def train_iterations(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: EpochBatches,
    loss_and_logits: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    iterations: int,
    evaluate: Callable[[], dict[str, float]],
    after_step: Callable[[], None] | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    description: str = "env step",
) -> dict[str, float]:
    """One environment step of training: ``iterations`` optimiser steps, then one evaluation.

    Runs through the project's one loop (:func:`prune_gym.training.train_loop`) without restoring
    a best checkpoint. ``loss_and_logits(images, labels)`` gets uint8 images (augmented by
    ``augment`` when given) and returns the loss to minimise and the logits.

    Returns:
        ``train_loss`` and ``train_accuracy`` (means over the step's batches) and ``evaluate()``'s metrics.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be ≥ 1, got {iterations}.")
    totals = {"loss": 0.0, "correct": 0, "seen": 0}

    def train_step(step: int) -> float:
        images, labels = batches.next()
        if augment is not None:
            images = augment(images)
        loss, logits = loss_and_logits(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        totals["loss"] += loss.item() * len(labels)
        totals["correct"] += int((logits.detach().argmax(1) == labels).sum())
        totals["seen"] += len(labels)
        return loss.item()

    result = train_loop(model, train_step, lambda: {"score": 0.0, **evaluate()}, iterations, iterations,
                        description=description, restore_best=False)
    metrics = {key: value for key, value in result.history[-1].items() if key not in ("score", "step", "train_loss")}
    return {"train_loss": totals["loss"] / totals["seen"], "train_accuracy": totals["correct"] / totals["seen"],
            **metrics}


def augmenter(dataset: ImageDataset, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random shifts (and horizontal flips for CIFAR) from ``generator``, as in pretraining."""
    flip = dataset.name.startswith("cifar")
    return lambda images: augment_batch(images.cpu(), generator, flip).to(images.device)


def classifier_metrics(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, data: SplitData,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Accuracy (0–1) and cross-entropy (nats) of ``model`` (eval mode) on uint8 ``images``."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_classifier(model, images, labels, data.dataset, images.device, preprocess=preprocess)
    finally:
        model.train(was_training)


def model_costs(model: nn.Module, image_shape: tuple[int, ...]) -> dict[str, int]:
    """``macs`` (per image) and ``params`` of ``model``, from the project's one counter."""
    return {"macs": count_macs(model, image_shape), "params": count_params(model)}


def accounting_info(
    costs: dict[str, int], costs_full: dict[str, int], val: dict[str, float], cycle: int
) -> dict[str, Any]:
    """The accounting every environment reports (:data:`ACCOUNTING_KEYS`), as Python scalars."""
    return {"macs": int(costs["macs"]), "macs_full": int(costs_full["macs"]), "params": int(costs["params"]),
            "params_full": int(costs_full["params"]), "val_accuracy": float(val["accuracy"]),
            "val_loss": float(val["cross_entropy"]), "cycle": int(cycle)}


def torch_seed(rng) -> int:
    """A torch seed drawn from an environment's ``np_random``."""
    return int(rng.integers(2**31 - 1))
