"""The grouped-backbone pretraining recipe (every channel prefix usable) and the pretrained backbones.

:func:`pretrained_backbone` returns the backbone a :class:`BackboneRequest` names: from this
process, else from the weights shipped with the package when the request is a shipped
configuration (:mod:`prune_gym.shipped`), else from the weights cache (:mod:`prune_gym.weights`),
else trained now with :func:`pretrain_grouped_cnn` through the project's one loop
(:func:`prune_gym.training.train_loop`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prune_gym import __version__
from prune_gym.data import DEFAULT_VAL_FRACTION, ImageDataset, load_dataset, load_npz, normalize
from prune_gym.models.grouped_cnn import GroupedCNN, get_backbone_spec
from prune_gym.models.resnet_cifar import RESNET_DEPTHS, check_resnet_name, cifar_resnet
from prune_gym.shipped import (
    WEIGHTS_MODES,
    ShippedConfig,
    ShippedWeightsError,
    describe_shipped,
    file_sha256,
    find_shipped,
    load_shipped,
    request_record,
    write_shipped,
)
from prune_gym.training import (
    GeneratorState,
    LoopCheckpoint,
    TrainResult,
    augment_batch,
    cutout_batch,
    evaluate_classifier,
    resolve_device,
    train_loop,
)
from prune_gym.weights import CACHE_FORMAT, cache_path, read_cache, writable_location, write_cache

logger = logging.getLogger("prune_gym")

#: Arithmetic of the forward passes while pretraining: ``"fp32"``, or ``"bf16"`` (autocast:
#: convolutions and matrix products in bfloat16, weights, optimiser and losses in float32).
PRECISIONS = ("fp32", "bf16")


#: Budget fields added after cache keys were first written, with the value every older key
#: implies: :meth:`PretrainBudget.record` leaves a field out at that value, so older keys (and the
#: weights shipped under them) stay valid. A new budget field belongs here too.
FIELDS_ADDED_TO_KEYS = {"precision": "fp32", "cutout": 0}


@dataclass(frozen=True)
class PretrainBudget:
    """How a grouped backbone is pretrained; every field is part of the weights-cache key.

    Pretraining has two phases, each an SGD run (Nesterov momentum, a triangular one-cycle
    schedule: linear warm-up over ``warmup_fraction`` of the phase, then linear decay to zero, the
    schedule of fast CIFAR-10 training such as airbench; best validation checkpoint kept): first
    the full width alone on the labels, then every width by the sandwich rule, starting from the
    full-width weights (see :func:`pretrain_grouped_cnn` for why). A plain network (``k=1``) runs
    the same two phases, so a narrow baseline trained with the same budget gets exactly the same
    schedule.

    Attributes:
        steps: optimiser steps of both phases together.
        full_width_fraction: share of ``steps`` spent on the full-width phase (0 skips it).
        batch_size: images per step.
        lr: peak learning rate of the full-width phase.
        sandwich_lr_fraction: peak learning rate of the sandwich phase, as a fraction of ``lr``. Why
            lower: the phase restarts the schedule from trained weights, and at the full peak it
            undid the full-width phase (on the full CIFAR-10 copy, 80.70 % validation accuracy at
            full width after the full-width phase, 77.24 % after the sandwich phase). On the 5k
            subset (100 steps, averaged losses), test accuracy at 1–4 groups: 41.0 / 42.9 / 43.1 /
            39.9 % at fraction 1, 42.0 / 44.7 / 47.0 / 49.1 % at 0.25.
        weight_decay: L2 penalty on conv and linear weights (not on BatchNorm parameters or
            biases, whose decay only fights the normalisation).
        label_smoothing: smoothing of the label cross-entropy (distillation targets are not smoothed).
        translate: largest random shift in pixels (zero fill) of the flip + translate augmentation.
        cutout: side in pixels of the square set to the mean image (zero after normalisation) at a
            random centre of every training image, after flip and translate (DeVries & Taylor 2017,
            "Cutout"; 16 on CIFAR-10 in the paper); 0, the default, turns it off. Why: ResNet-20
            over-fits the 45,000 JPEG training images (98.65 % training against 88.44 % validation
            accuracy after 136 epochs), and a longer schedule or a lower learning rate did not help;
            Cutout 16 on the same 12,000 bf16 steps raised its test accuracy from 87.84 to 89.17 %.
        warmup_fraction: share of each phase spent warming the learning rate up.
        random_configs: random per-layer width mixes per sandwich step besides the full and narrowest.
        eval_every: steps between validation evaluations (best checkpoint is kept).
        precision: ``"fp32"`` or ``"bf16"`` forward passes (:data:`PRECISIONS`). Why bf16: on a CPU
            with AVX-512 BF16 (this project's machine, an AMD EPYC) a training step at batch 512
            ran 2.0–2.4× faster under bf16 autocast than in fp32 (ResNet-20 1,631 against 680
            images/s on two threads, cnn4's sandwich step 1,446 against 730;
            ``benchmarks/pretrain_precision.py``, ``docs/bench/pretrain-precision.jsonl``), and
            ``RNP-CIFAR10-v0``'s whole 1,200-step recipe took 281 s against 507 s with test
            accuracy within 0.6 points at every width. Only a budget with ``"bf16"`` names it in
            its cache key, so the keys of every fp32 budget (and the weights shipped under them)
            stay as they were. On a CPU without AVX-512 BF16 or AMX the opposite holds: bfloat16 is
            emulated, and a cnn4 step ran at 0.13× its fp32 speed (AVX2-only AMD EPYC, one thread);
            pretraining warns there (:func:`warn_if_bf16_is_emulated`).
    """

    steps: int = 1200
    full_width_fraction: float = 0.6
    batch_size: int = 512
    lr: float = 0.4
    sandwich_lr_fraction: float = 0.25
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    translate: int = 2
    cutout: int = 0
    warmup_fraction: float = 0.2
    random_configs: int = 2
    eval_every: int = 250
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}.")
        if self.steps < 1:
            raise ValueError(f"pretraining needs steps ≥ 1, got {self.steps}.")
        if not 0.0 <= self.full_width_fraction < 1.0:
            raise ValueError(f"full_width_fraction must lie in [0, 1), got {self.full_width_fraction}.")
        if not 0.0 <= self.label_smoothing < 1.0 or not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError("label_smoothing and warmup_fraction must lie in [0, 1), got "
                             f"{self.label_smoothing} and {self.warmup_fraction}.")
        if not 0.0 < self.sandwich_lr_fraction <= 1.0:
            raise ValueError(f"sandwich_lr_fraction must lie in (0, 1], got {self.sandwich_lr_fraction}.")
        if self.translate < 0:
            raise ValueError(f"translate is a shift in pixels ≥ 0, got {self.translate}.")
        if self.cutout < 0:
            raise ValueError(f"cutout is a square's side in pixels ≥ 0 (0: off), got {self.cutout}.")

    def record(self) -> dict[str, Any]:
        """The budget as the plain data a cache key or a manifest stores: every field, except those
        of :data:`FIELDS_ADDED_TO_KEYS` at their older keys' value (``precision`` fp32, ``cutout`` off)."""
        return {name: value for name, value in asdict(self).items()
                if name not in FIELDS_ADDED_TO_KEYS or value != FIELDS_ADDED_TO_KEYS[name]}

    @property
    def full_width_steps(self) -> int:
        return int(self.steps * self.full_width_fraction)

    @property
    def sandwich_steps(self) -> int:
        return self.steps - self.full_width_steps


def random_width_mixes(model: GroupedCNN, count: int, generator: torch.Generator) -> torch.Tensor:
    """Per-sample group counts, uniform over 1..k at every decided layer (int64, count×(L-1))."""
    return torch.randint(1, model.k + 1, (count, model.num_decisions), generator=generator)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX). Without it autocast
    emulates bfloat16: a cnn4 training step ran at 0.13× its fp32 speed on an AVX2-only AMD EPYC
    (48 against 384 images/s, one thread, ``benchmarks/pretrain_precision.py``)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def warn_if_bf16_is_emulated(precision: str, device: torch.device) -> bool:
    """Log a warning (and return ``True``) when ``precision`` asks for bf16 on a CPU that would
    only emulate it. A warning, not a silent switch to fp32: the precision is part of the weights'
    cache key, so the request must train what it names."""
    if precision != "bf16" or device.type != "cpu" or cpu_has_native_bf16():
        return False
    logger.warning("pretrain_precision=bf16 on a CPU without AVX-512 BF16 or AMX: bfloat16 is emulated here and "
                   "trains several times slower than fp32 (0.13× measured on an AVX2-only CPU); "
                   "pretrain_precision=fp32 is faster on this machine.")
    return True


def forward_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context for forward passes at ``precision`` (:data:`PRECISIONS`); backward passes run
    outside it (PyTorch's autocast guidance), in the dtypes the forward chose."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def full_width_step(model: GroupedCNN, images: torch.Tensor, labels: torch.Tensor,
                    label_smoothing: float = 0.0, precision: str = "fp32", scale: float = 1.0
                    ) -> tuple[torch.Tensor, float]:
    """Accumulate the gradient of the full width's (smoothed) cross-entropy on the labels, times
    ``scale``; returns the logits (for distillation) and the (unscaled) loss."""
    with forward_precision(precision, images.device):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    (loss * scale).backward()
    return logits, loss.item()


def sandwich_step(
    model: GroupedCNN, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, random_configs: int,
    label_smoothing: float = 0.0, precision: str = "fp32",
) -> float:
    """Accumulate gradients for one batch by the sandwich rule with in-place distillation.

    Full width learns from the labels; the narrowest network and ``random_configs`` random
    per-layer mixes learn from the full network's (detached) predictions, which transfers the full
    network's knowledge to every prefix and keeps their BN statistics trained on real mixes.
    """
    if model.k == 1:  # a plain network (e.g. a narrow baseline) has no narrower prefix to distil into
        return full_width_step(model, images, labels, label_smoothing, precision)[1]
    # The sandwich's losses are averaged, not summed: the first group's weights are in every one of
    # them, so a sum takes (2 + random_configs)× the full-width phase's step on them. Summed at lr
    # 0.4, every width of RNP-CIFAR10-v0's cnn4 fell to chance (8–14 % test accuracy) within 40
    # sandwich steps on the 5k subset; averaged, 40–43 % (probe on cifar10-subset.npz, 100 steps).
    scale = 1.0 / (2 + random_configs)
    full_logits, loss = full_width_step(model, images, labels, label_smoothing, precision, scale)
    soft_targets = full_logits.detach().float().softmax(dim=1)
    configs = [[1] * model.num_decisions, *random_width_mixes(model, random_configs, generator).tolist()]
    for config in configs:
        with forward_precision(precision, images.device):
            logits = model(images, config)
        (F.cross_entropy(logits.float(), soft_targets) * scale).backward()
    return loss


def pair_covering_configs(model: GroupedCNN, generator: torch.Generator) -> list[list[int]]:
    """``k²`` per-layer configurations in which every adjacent pair of decided layers takes every
    (groups_in, groups_out) combination, so every pair-conditioned BN is used at least once.

    Layers alternate between two counts ``a, b`` over all ``a, b``; a random phase (start with
    ``a`` or ``b``) varies which upstream widths each pair is seen with from one call to the next.
    """
    phase = int(torch.randint(2, (1,), generator=generator))
    counts = range(1, model.k + 1)
    return [[(a, b)[(layer + phase) % 2] for layer in range(model.num_decisions)] for a in counts for b in counts]


@torch.no_grad()
def recalibrate_batchnorm(
    model: GroupedCNN, sample_images: Callable[[], torch.Tensor], batches: int, generator: torch.Generator
) -> None:
    """Recompute every BN's running statistics exactly (cumulative average, not an EMA) over
    ``batches`` batches, each run at full width, the narrowest width, every configuration of
    :func:`pair_covering_configs` and two random per-layer mixes.

    Why: the EMA of training weights the last few batches, and with one BN per (input, output)
    pair a random mix of configurations can miss a pair altogether — which leaves that BN at its
    initial statistics (mean 0, variance 1) and breaks every network that uses it.
    """
    norms = [norm for layer_norms in model.norms for norm in layer_norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative moving average
    model.train()
    with torch.no_grad():  # statistics only: no autograd graph to record for these forwards
        for _ in range(batches):
            images = sample_images()
            configs = [None, [1] * model.num_decisions, *pair_covering_configs(model, generator),
                       *random_width_mixes(model, 2, generator).tolist()]
            for config in configs:
                model(images, config)
    for norm in norms:
        norm.momentum = 0.1
    untouched = [index for index, norm in enumerate(norms) if int(norm.num_batches_tracked) == 0]
    if untouched:  # a BN left at mean 0 / variance 1 silently breaks every network using it
        raise RuntimeError(f"BatchNorm recalibration never used BatchNorms {untouched}; no configuration covered them.")


def start_prefixes_from_full_width(model: GroupedCNN) -> None:
    """Set every BatchNorm of every layer to the first channels of that layer's full-width BN
    (affine parameters and running statistics): after the full-width phase each prefix network
    starts as the corresponding slice of the trained full network, not from an untrained BN."""
    with torch.no_grad():
        for layer, norms in enumerate(model.norms):
            full = norms[model.norm_index(layer, model.k if layer >= 2 else 1, model.k)]
            for norm in norms:
                if norm is full:
                    continue
                width = norm.num_features
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(norm, name).copy_(getattr(full, name)[:width])
                norm.num_batches_tracked.copy_(full.num_batches_tracked)


def _sgd_one_cycle(model: nn.Module, budget: PretrainBudget, steps: int, peak_lr: float):
    decayed = [parameter for parameter in model.parameters() if parameter.dim() > 1]
    others = [parameter for parameter in model.parameters() if parameter.dim() <= 1]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": budget.weight_decay},
                                 {"params": others, "weight_decay": 0.0}], lr=peak_lr, momentum=0.9, nesterov=True)
    warmup = max(1, round(steps * budget.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / warmup if step < warmup
                                                 else max(0.0, (steps - step) / max(1, steps - warmup)))
    return optimizer, schedule


def _training_batches(dataset: ImageDataset, budget: PretrainBudget, generator: torch.Generator,
                      device: torch.device, val_fraction: float) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """``sample_batch()``: ``budget.batch_size`` training images drawn with replacement, flipped
    (CIFAR only: mirrored digits are other digits; mirrored objects are not) and translated on the
    uint8 tensors, normalised, cut out (``budget.cutout``), channels_last (~1.45× faster for these
    convolutions on CPUs, measured on 2 cores), with their labels."""
    x_train, y_train = dataset.split("train", val_fraction)
    flip = dataset.name.startswith("cifar")

    def sample_batch() -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.randint(len(y_train), (budget.batch_size,), generator=generator)
        images = normalize(augment_batch(x_train[rows], generator, flip, budget.translate).to(device), dataset)
        if budget.cutout:
            images = cutout_batch(images, generator, budget.cutout)
        return images.contiguous(memory_format=torch.channels_last), y_train[rows].to(device)

    return sample_batch


def _run_phase(model: nn.Module, budget: PretrainBudget, steps: int, peak_lr: float, sample_batch: Callable[[], tuple],
               step_loss: Callable[[torch.Tensor, torch.Tensor], float], evaluate: Callable[[], dict[str, float]],
               description: str, generator: torch.Generator, checkpoint: LoopCheckpoint | None) -> TrainResult:
    """One SGD one-cycle phase of ``steps`` steps through the project's one loop (best
    validation checkpoint kept); ``step_loss`` accumulates the gradients of one batch. With
    ``checkpoint`` the phase resumes where a killed run left it (``generator`` is the random
    stream of the batches and width mixes, saved with the optimiser and schedule)."""
    optimizer, schedule = _sgd_one_cycle(model, budget, steps, peak_lr)

    def train_step(step: int) -> float:
        images, labels = sample_batch()
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(images, labels)
        optimizer.step()
        schedule.step()
        return loss

    return train_loop(model, train_step, evaluate, steps, budget.eval_every, description=description,
                      checkpoint=checkpoint,
                      stateful={"optimizer": optimizer, "schedule": schedule, "generator": GeneratorState(generator)})


def pretrain_grouped_cnn(
    model: GroupedCNN,
    dataset: ImageDataset,
    budget: PretrainBudget,
    seed: int,
    device: torch.device,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    checkpoint: LoopCheckpoint | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on the dataset's train split; select the checkpoint by the mean
    validation accuracy over uniform widths 1..k. Returns metrics (validation accuracy per width).
    With ``checkpoint``, each phase saves its progress and a killed run resumes (one file per phase).

    Why two phases: on the 5k-image CIFAR-10 subset, sandwich training from scratch (distilling
    every prefix from a full network that is itself still untrained) left every width 4–12 points
    below a plain network trained alone; starting the sandwich phase from a trained full-width
    network closes that gap. ``RNP-CIFAR10-v0``'s backbone, test accuracy at 1/2/3/4 groups (CPU,
    2 threads): 59.96 / 60.35 / 61.90 / 65.76 % after 1,500 sandwich steps from scratch, 68.09 /
    72.92 / 75.24 / 75.24 % after 1,500 full-width steps and then 1,500 sandwich steps.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_val, y_val = dataset.split("val", val_fraction)
    model.to(device, memory_format=torch.channels_last)
    # 10 batches (×(k²+4) width configurations) pin the statistics down; tiny budgets use fewer.
    recalibration_batches = max(1, min(10, budget.steps // 10))
    sample_batch = _training_batches(dataset, budget, generator, device, val_fraction)

    def run_phase(steps: int, peak_lr: float, step_loss: Callable[[torch.Tensor, torch.Tensor], float],
                  evaluate: Callable[[], dict[str, float]], description: str) -> TrainResult:
        return _run_phase(model, budget, steps, peak_lr, sample_batch, step_loss, evaluate,
                          f"pretrain {model.spec.name} on {dataset.name} ({description})", generator,
                          checkpoint.for_phase(description.replace(" ", "-")) if checkpoint else None)

    def evaluate_full_width() -> dict[str, float]:
        accuracy = evaluate_classifier(model, x_val, y_val, dataset, device)["accuracy"]
        return {"val_accuracy_full": accuracy, "score": accuracy}

    mixes = random_width_mixes(model, len(y_val), torch.Generator().manual_seed(seed)).to(device)

    def evaluate_every_width() -> dict[str, float]:
        metrics = {}
        for groups in range(1, model.k + 1):
            scores = evaluate_classifier(lambda x, g=groups: model(x, g), x_val, y_val, dataset, device)
            metrics[f"val_accuracy_g{groups}"] = scores["accuracy"]
        # The agent's configurations are per-image mixes: score those too (fixed, seeded mixes).
        logits = model(normalize(x_val.to(device), dataset), mixes)
        metrics["val_accuracy_mix"] = float((logits.argmax(1) == y_val.to(device)).float().mean())
        metrics["score"] = sum(metrics.values()) / (model.k + 1)
        return metrics

    wall_s = 0.0
    if budget.full_width_steps:
        wall_s += run_phase(budget.full_width_steps, budget.lr,
                            lambda images, labels: full_width_step(model, images, labels, budget.label_smoothing,
                                                                   budget.precision)[1],
                            evaluate_full_width, "full width").wall_s
        start_prefixes_from_full_width(model)
    result = run_phase(budget.sandwich_steps, budget.lr * budget.sandwich_lr_fraction,
                       lambda images, labels: sandwich_step(model, images, labels, generator, budget.random_configs,
                                                           budget.label_smoothing, budget.precision),
                       evaluate_every_width, "every width")
    # Replace the EMA statistics of the kept checkpoint by exact averages (forward passes only).
    recalibrate_batchnorm(model, lambda: sample_batch()[0], recalibration_batches, generator)
    model.eval()
    final = evaluate_every_width()
    model.to("cpu", memory_format=torch.contiguous_format).eval()
    return {**{key: round(value, 4) for key, value in final.items() if key.startswith("val_accuracy")},
            "best_step": budget.full_width_steps + result.best_step, "train_wall_s": round(wall_s + result.wall_s, 1)}


def pretrain_classifier(
    model: nn.Module,
    dataset: ImageDataset,
    budget: PretrainBudget,
    seed: int,
    device: torch.device,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    checkpoint: LoopCheckpoint | None = None,
) -> dict[str, Any]:
    """Train a plain classifier (a CIFAR ResNet) in place: one phase of ``budget.steps`` SGD
    steps (Nesterov, one-cycle, label smoothing, flip + translate on uint8 tensors, channels_last;
    ``full_width_fraction`` and ``random_configs`` do not apply), best validation accuracy kept.
    With ``checkpoint`` a killed run resumes where it stopped. Returns ``val_accuracy``,
    ``best_step`` and ``train_wall_s``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_val, y_val = dataset.split("val", val_fraction)
    model.to(device, memory_format=torch.channels_last)
    sample_batch = _training_batches(dataset, budget, generator, device, val_fraction)

    def step_loss(images: torch.Tensor, labels: torch.Tensor) -> float:
        return full_width_step(model, images, labels, budget.label_smoothing, budget.precision)[1]

    def evaluate() -> dict[str, float]:
        accuracy = evaluate_classifier(model, x_val, y_val, dataset, device)["accuracy"]
        return {"val_accuracy": accuracy, "score": accuracy}

    name = getattr(model, "name", type(model).__name__)
    result = _run_phase(model, budget, budget.steps, budget.lr, sample_batch, step_loss, evaluate,
                        f"pretrain {name} on {dataset.name}", generator, checkpoint)
    model.to("cpu", memory_format=torch.contiguous_format).eval()
    return {"val_accuracy": round(result.best_score, 4), "best_step": result.best_step,
            "train_wall_s": round(result.wall_s, 1)}


# ----------------------------------------------------------------------------------------------
# Pretrained backbones (through the weights cache)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneRequest:
    """Everything that determines a pretrained backbone (and hence its cache file)."""

    dataset: str
    backbone: str = "cnn4"
    k: int = 4
    dropout: float = 0.0
    seed: int = 0
    val_fraction: float = DEFAULT_VAL_FRACTION
    budget: PretrainBudget = PretrainBudget()

def cache_key(request: BackboneRequest, dataset: ImageDataset) -> dict[str, Any]:
    """The full key stored in (and checked against) a cache file."""
    if request.backbone in RESNET_DEPTHS:
        architecture = {"name": request.backbone, "depth": check_resnet_name(request.backbone), "shortcut": "A"}
    else:
        spec = get_backbone_spec(request.backbone)
        architecture = {"name": spec.name, "widths": list(spec.widths), "pool_after": list(spec.pool_after)}
    return {
        "format": CACHE_FORMAT,
        "architecture": {**architecture, "in_channels": dataset.image_shape[0], "num_classes": dataset.num_classes,
                         "k": request.k, "dropout": request.dropout},
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint, "val_fraction": request.val_fraction},
        "seed": request.seed,
        "budget": request.budget.record(),
    }


def is_plain_classifier(request: BackboneRequest) -> bool:
    """Whether ``request`` names a plain classifier (a CIFAR ResNet), not a grouped backbone."""
    return request.backbone in RESNET_DEPTHS


def build_backbone(request: BackboneRequest, dataset: ImageDataset) -> nn.Module:
    """An untrained backbone for ``request`` shaped for ``dataset``: a :class:`GroupedCNN`, or a
    CIFAR ResNet (``"resnet20"``, ``"resnet56"``; ``k`` must be 1 and ``dropout`` 0)."""
    torch.manual_seed(request.seed)
    if is_plain_classifier(request):
        if request.k != 1 or request.dropout:
            raise ValueError(f"{request.backbone} is a plain network: k must be 1 and dropout 0, got k={request.k}, "
                             f"dropout={request.dropout}.")
        return cifar_resnet(request.backbone, dataset.num_classes, dataset.image_shape[0])
    return GroupedCNN(get_backbone_spec(request.backbone), dataset.image_shape[0], dataset.num_classes,
                      request.k, request.dropout)


def pretrain_backbone(model: nn.Module, request: BackboneRequest, dataset: ImageDataset,
                      device: torch.device, checkpoint: LoopCheckpoint | None = None) -> dict[str, Any]:
    """Pretrain ``model`` (from :func:`build_backbone`) by its recipe: grouped backbones two-phase
    (:func:`pretrain_grouped_cnn`), plain classifiers one phase (:func:`pretrain_classifier`);
    ``checkpoint`` makes a killed run resumable."""
    recipe = pretrain_classifier if is_plain_classifier(request) else pretrain_grouped_cnn
    return recipe(model, dataset, request.budget, request.seed, device, request.val_fraction, checkpoint)


def pretraining_checkpoint(key: dict[str, Any], path: Path) -> LoopCheckpoint:
    """Where pretraining for the cache file ``path`` (of ``key``) keeps its progress: beside it,
    ``<name>.partial.pt`` (and one file per phase), removed once the cache file is written. A run
    killed after hours (a CIFAR ResNet on a CPU) resumes from its last save, at most
    ``every_s`` (5 minutes) behind. Where the cache directory is read-only, the progress goes to
    the fallback directory the weights will go to (:func:`writable_location`)."""
    return LoopCheckpoint(writable_location(path.with_name(f"{path.stem}.partial.pt")), key)

_PRETRAINED: dict[str, tuple[nn.Module, dict[str, Any]]] = {}


def pretrained_backbone(
    request: BackboneRequest, data_root: str | os.PathLike | None = None, device: str = "auto",
    weights: str = "auto",
) -> tuple[nn.Module, dict[str, Any], ImageDataset]:
    """The pretrained backbone for ``request``: from this process, else the shipped weights, else
    the disk cache, else trained now.

    Args:
        weights: ``"auto"`` uses the weights shipped with the package when ``request`` is a
            shipped configuration (matched on the dataset's name, not its fingerprint: any copy
            of the dataset gets them, without training) and else the cache, training on a miss;
            ``"shipped"`` insists on shipped weights; ``"train"`` never uses them, so the backbone
            is trained on (or loaded from the cache for) the dataset copy at ``data_root``.

    Returns:
        the model (eval mode, on ``device``; shared within the process — copy before changing it),
        its training metrics, and the dataset (the caller's copy, also with shipped weights).

    Raises:
        ShippedWeightsError: a matching shipped file that is damaged, disagrees with its manifest
            or does not fit the dataset (never retrained silently; ``weights="train"`` opts out),
            or ``weights="shipped"`` with no shipped file for ``request``.
    """
    if weights not in WEIGHTS_MODES:
        raise ValueError(f"weights must be one of {WEIGHTS_MODES}, got {weights!r}.")
    dataset = load_dataset(request.dataset, data_root)
    shipped = None if weights == "train" else find_shipped(request)
    if shipped is None and weights == "shipped":
        raise ShippedWeightsError(
            f"No weights are shipped for {request}. Shipped configurations:\n{describe_shipped()}\n"
            "Pass weights=\"auto\" (the default) to use the cache or train this backbone.")
    target = resolve_device(device)
    if shipped is not None:
        path = shipped[0]
    else:
        key = cache_key(request, dataset)
        path = cache_path(key)
    memo = f"{'shipped:' if shipped else ''}{path}@{target}"
    if memo not in _PRETRAINED:
        # Building and pretraining seed torch with the backbone's seed; the caller's random stream
        # (an agent's initial weights, say) must not depend on whether a backbone was loaded here.
        with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
            model = build_backbone(request, dataset)
            if shipped is not None:
                metrics = load_shipped(*shipped, model, dataset)
                logger.info("Using the shipped %s backbone %s (trained on %s; weights=\"train\" trains on your copy)",
                            request.dataset, path.stem, shipped[1]["training_data"]["file"])
            else:
                metrics = read_cache(path, key, model)
                if metrics is None:
                    progress = pretraining_checkpoint(key, path)
                    logger.info("Pretraining %s on %s (%d steps), then caching it at %s; progress is saved to %s "
                                "every %d min, so a killed run resumes from there", request.backbone, dataset.name,
                                request.budget.steps, path, progress.path.name, progress.every_s // 60)
                    warn_if_bf16_is_emulated(request.budget.precision, target)
                    metrics = pretrain_backbone(model, request, dataset, target, progress)
                    if write_cache(path, key, model, metrics) is not None:
                        progress.remove()
        _PRETRAINED[memo] = (model.to(target).eval(), metrics)
    model, metrics = _PRETRAINED[memo]
    return model, metrics, dataset


# ----------------------------------------------------------------------------------------------
# Shipping a backbone with the package (prune-gym ship-weights)
# ----------------------------------------------------------------------------------------------


def _data_file_record(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": file_sha256(path)} if path.is_file() else {"file": str(path), "sha256": None}


def accuracy_by_width(model: nn.Module, copy: ImageDataset, statistics: ImageDataset,
                           device: torch.device) -> dict[str, Any]:
    """Accuracy and cross-entropy of every uniform width (1..k groups; a plain classifier such as
    a CIFAR ResNet has the one width ``"1"``) on ``copy``'s test split, normalised with
    ``statistics``' channel statistics (a copy's own, as an env on that copy does)."""
    accuracy, cross_entropy = {}, {}
    grouped = isinstance(model, GroupedCNN)
    with torch.inference_mode():
        for groups in range(1, (model.k if grouped else 1) + 1):
            forward = (lambda x, g=groups: model(x, g)) if grouped else model
            scores = evaluate_classifier(forward, copy.x_test, copy.y_test, copy, device,
                                         preprocess=lambda batch: normalize(batch, statistics))
            accuracy[str(groups)] = round(scores["accuracy"], 4)
            cross_entropy[str(groups)] = round(scores["cross_entropy"], 4)
    return {**_data_file_record(Path(copy.source)), "images": len(copy.y_test), "accuracy_by_groups": accuracy,
            "cross_entropy_by_groups": cross_entropy}


def ship_backbone(config: ShippedConfig, request: BackboneRequest, data_root: str | os.PathLike | None = None,
                  device: str = "auto", command: str = "", directory: Path | None = None) -> dict[str, Any]:
    """Get ``request``'s backbone through :func:`pretrained_backbone` (``weights="train"``: from the
    cache, else trained now on the copy at ``data_root``), measure test accuracy per width on that
    copy and on every other ``.npz`` copy of the dataset beside it (``<name>.npz``,
    ``<name>-subset.npz``: for CIFAR-10 the exact-pixel subset), and write the weights and their
    manifest into ``directory`` (default the package's). Returns the manifest.

    The index is not rewritten here; :func:`prune_gym.shipped.write_index` does that once after."""
    target = resolve_device(device)
    key = cache_key(request, load_dataset(request.dataset, data_root))
    cached = cache_path(key)
    from_cache = cached.is_file()  # else (or if that file is unusable: warned) trained now
    model, metrics, dataset = pretrained_backbone(request, data_root, device, weights="train")
    source = Path(dataset.source)
    copies = [dataset]
    if source.suffix == ".npz":
        for candidate in (source.parent / f"{dataset.name}.npz", source.parent / f"{dataset.name}-subset.npz"):
            if candidate.is_file() and candidate.resolve() != source.resolve():
                copies.append(load_npz(candidate, dataset.name))
    evaluations = [accuracy_by_width(model, copy, copy if copy.has_training_images else dataset, target)
                   for copy in copies]
    x_val, _ = dataset.split("val", request.val_fraction)
    fields = {
        "command": command,
        "weights_source": f"weights cache ({cached.name})" if from_cache else "trained by this command",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "prune_gym_version": __version__,
        "request": request_record(request),
        "architecture": {**key["architecture"], "image_shape": list(dataset.image_shape)},
        "parameters": sum(tensor.numel() for tensor in model.state_dict().values()),
        "training_data": {
            "name": dataset.name, **_data_file_record(source), "fingerprint": dataset.fingerprint,
            "train_images": len(dataset.y_train) - len(x_val), "val_images": len(x_val),
            # Normalisation is each copy's own (ImageDataset.normalize); these are the training copy's.
            "channel_mean": [round(value, 5) for value in dataset.channel_mean.tolist()],
            "channel_std": [round(value, 5) for value in dataset.channel_std.tolist()],
        },
        "test_accuracy": evaluations,
    }
    manifest_path = write_shipped(config, model, key, metrics, fields, directory)
    return json.loads(manifest_path.read_text())
