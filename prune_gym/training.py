"""The project's one train/evaluate loop, classifier evaluation and image augmentation.

Every family trains through :func:`train_loop` (early stopping, best-checkpoint restore, progress
bar); it knows no model family. The grouped-backbone pretraining recipe lives in
:mod:`prune_gym.pretraining`, the weights cache in :mod:`prune_gym.weights`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prune_gym.data import ImageDataset, normalize
from prune_gym.progress import track_progress


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to :class:`torch.device`.

    Raises:
        ValueError: an unknown device name, or a CUDA device this machine does not have (checked
            here, so the error is one line at construction, not a traceback deep in a forward pass).
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"Unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'.") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r}, but there is no CUDA device; use 'cpu' or 'auto'.")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device={str(device)!r}, but this machine has {count} CUDA device(s) "
                             f"(cuda:0..cuda:{count - 1}); use one of those, 'cpu' or 'auto'.")
    return resolved


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------




@dataclass
class TrainResult:
    """What :func:`train_loop` did: metrics at every evaluation and where the best one was."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_score: float = -math.inf
    best_step: int = 0
    steps_run: int = 0
    stopped_early: bool = False
    wall_s: float = 0.0


def train_loop(
    model: nn.Module,
    train_step: Callable[[int], float],
    evaluate: Callable[[], dict[str, float]],
    steps: int,
    eval_every: int,
    patience: int | None = None,
    description: str = "training",
    restore_best: bool = True,
) -> TrainResult:
    """Run ``train_step(step) -> loss`` ``steps`` times, evaluating every ``eval_every`` steps.

    ``evaluate()`` returns metrics including ``"score"`` (higher is better). The model's weights at
    the best score are restored at the end unless ``restore_best`` is false (training-time
    environments keep the weights where training left them). With ``patience``, training stops
    after that many evaluations without improvement (early stopping).
    """
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be ≥ 1, got {steps} and {eval_every}.")
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    evaluations_without_gain = 0
    started = time.perf_counter()
    # A bar on a terminal; without one (CI, nohup, cluster logs) a plain line every 30 s or so.
    progress = track_progress(range(1, steps + 1), description, total=steps, unit="step")
    running_loss = None
    for step in progress:
        model.train()
        loss = train_step(step)
        running_loss = loss if running_loss is None else 0.9 * running_loss + 0.1 * loss
        result.steps_run = step
        if step % eval_every and step != steps:
            continue
        model.eval()
        metrics = {"step": step, "train_loss": running_loss, **evaluate()}
        result.history.append(metrics)
        progress.set_postfix(loss=f"{running_loss:.3f}", score=f"{metrics['score']:.4f}")
        if metrics["score"] > result.best_score:
            result.best_score, result.best_step = metrics["score"], step
            if restore_best:
                best_state = copy.deepcopy(model.state_dict())
            evaluations_without_gain = 0
        else:
            evaluations_without_gain += 1
            if patience is not None and evaluations_without_gain >= patience:
                result.stopped_early = True
                break
    progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.wall_s = time.perf_counter() - started
    return result


@torch.no_grad()
def evaluate_classifier(
    forward: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    dataset: ImageDataset,
    device: torch.device,
    batch_size: int = 1000,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Accuracy (fraction 0–1) and mean cross-entropy (nats) of ``forward`` on uint8 ``images``.

    ``preprocess`` turns a uint8 batch into the model's input (default: :func:`normalize` with the
    dataset's channel statistics)."""
    prepare = preprocess or (lambda batch: normalize(batch, dataset))
    correct, loss_sum = 0, 0.0
    for start in range(0, len(labels), batch_size):
        batch = prepare(images[start:start + batch_size].to(device))
        target = labels[start:start + batch_size].to(device)
        logits = forward(batch)
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    return {"accuracy": correct / len(labels), "cross_entropy": loss_sum / len(labels)}


def augment_batch(images: torch.Tensor, generator: torch.Generator, flip: bool, pad: int = 4) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero fill) and, if ``flip``, horizontal flips."""
    count, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator)
    rows = (offsets[:, 0, None] + torch.arange(height)).view(count, 1, height, 1)
    cols = (offsets[:, 1, None] + torch.arange(width)).view(count, 1, 1, width)
    if flip:
        mirrored = torch.rand(count, generator=generator) < 0.5
        cols = torch.where(mirrored.view(count, 1, 1, 1), cols.flip(-1), cols)
    batch_index = torch.arange(count).view(count, 1, 1, 1)
    channel_index = torch.arange(images.shape[1]).view(1, -1, 1, 1)
    return padded[batch_index, channel_index, rows, cols]
