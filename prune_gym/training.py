"""The project's one train/evaluate loop, classifier evaluation and image augmentation.

Every family trains through :func:`train_loop` (early stopping, best-checkpoint restore, progress
bar); it knows no model family. The grouped-backbone pretraining recipe lives in
:mod:`prune_gym.pretraining`, the weights cache in :mod:`prune_gym.weights`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prune_gym.data import ImageDataset, normalize
from prune_gym.progress import progress_counter
from prune_gym.weights import WeightsCacheWarning, atomic_torch_save

logger = logging.getLogger("prune_gym")


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


class GeneratorState:
    """A :class:`torch.Generator` seen through ``state_dict()`` / ``load_state_dict()``, so a
    :class:`LoopCheckpoint` saves a data sampler's random stream like an optimiser's state."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["state"])


@dataclass(frozen=True)
class LoopCheckpoint:
    """Where :func:`train_loop` keeps its progress, so a killed run resumes instead of restarting.

    Long pretraining runs (a CIFAR ResNet on a CPU takes hours, longer than one sitting) must
    survive a kill. Every ``every_s`` seconds, and when the loop ends, the loop writes (atomically)
    the model, the ``stateful`` objects' ``state_dict()`` (optimiser, schedule, a data sampler's
    :class:`GeneratorState`), torch's global random state, the best checkpoint so far and the
    metrics. A later call with the same ``key`` continues from the saved step and, because every
    random stream is restored, ends with the same weights as an uninterrupted run (tested). A file
    with another key (another budget, dataset or seed) is ignored with a warning and overwritten.

    Attributes:
        path: the checkpoint file.
        key: JSON-serialisable description of the run; must match to resume.
        every_s: seconds of training between saves (saving is cheap: weights of a few MB).
    """

    path: Path
    key: dict[str, Any]
    every_s: float = 300.0

    def for_phase(self, phase: str) -> LoopCheckpoint:
        """The checkpoint of one phase of a multi-phase recipe: its own file and key."""
        return replace(self, path=self.path.with_name(f"{self.path.stem}.{phase}{self.path.suffix}"),
                       key={**self.key, "phase": phase})

    def remove(self) -> None:
        """Delete this checkpoint and its phases' (after the run's result is stored elsewhere)."""
        for candidate in self.path.parent.glob(f"{self.path.stem}*{self.path.suffix}"):
            candidate.unlink(missing_ok=True)

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` with the key; an unwritable place only warns (the run goes on)."""
        try:
            atomic_torch_save({"key": self.key, **state}, self.path)
        except (OSError, RuntimeError) as error:
            warnings.warn(f"Could not write the training checkpoint {self.path} ({error}); a killed run will "
                          "restart from the beginning.", WeightsCacheWarning, stacklevel=3)

    def load(self, device: torch.device) -> dict[str, Any] | None:
        """The saved state if ``path`` holds one for ``key``, else ``None`` (warned if unusable)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
            if state.get("key") != self.key:
                raise ValueError("it was written for another run (its key differs)")
        except Exception as error:  # noqa: BLE001 - a damaged or foreign file restarts, never misleads
            warnings.warn(f"Ignoring the training checkpoint {self.path} ({type(error).__name__}: {error}); "
                          "starting from step 1.", WeightsCacheWarning, stacklevel=3)
            return None
        return state


def _rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["cpu"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"]])


def train_loop(
    model: nn.Module,
    train_step: Callable[[int], float],
    evaluate: Callable[[], dict[str, float]],
    steps: int,
    eval_every: int,
    patience: int | None = None,
    description: str = "training",
    restore_best: bool = True,
    checkpoint: LoopCheckpoint | None = None,
    stateful: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Run ``train_step(step) -> loss`` ``steps`` times, evaluating every ``eval_every`` steps.

    ``evaluate()`` returns metrics including ``"score"`` (higher is better). The model's weights at
    the best score are restored at the end unless ``restore_best`` is false (training-time
    environments keep the weights where training left them). With ``patience``, training stops
    after that many evaluations without improvement (early stopping). With ``checkpoint``, progress
    is saved and a matching saved run resumes (see :class:`LoopCheckpoint`); ``stateful`` names the
    objects besides the model whose ``state_dict()`` the run depends on (optimiser, schedule, a
    :class:`GeneratorState`).
    """
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be ≥ 1, got {steps} and {eval_every}.")
    stateful = dict(stateful or {})
    result = TrainResult()
    best_state: dict[str, torch.Tensor] | None = None
    evaluations_without_gain, running_loss, first_step, wall_before = 0, None, 1, 0.0
    saved = checkpoint.load(next(model.parameters()).device) if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        for name, thing in stateful.items():
            thing.load_state_dict(saved["stateful"][name])
        _set_rng_states(saved["rng"])
        result = TrainResult(**saved["result"])
        best_state, running_loss = saved["best_state"], saved["running_loss"]
        evaluations_without_gain, wall_before = saved["evaluations_without_gain"], result.wall_s
        first_step = result.steps_run + 1
        logger.info("Resuming %s at step %d of %d from %s", description, first_step, steps, checkpoint.path)
        if saved["finished"]:
            return result
    started = last_save = time.perf_counter()

    def save(finished: bool) -> None:
        result.wall_s = wall_before + time.perf_counter() - started
        checkpoint.save({"model": model.state_dict(), "finished": finished, "rng": _rng_states(),
                         "stateful": {name: thing.state_dict() for name, thing in stateful.items()},
                         "result": asdict(result), "best_state": best_state, "running_loss": running_loss,
                         "evaluations_without_gain": evaluations_without_gain})

    # A bar on a terminal; without one (CI, nohup, cluster logs) a plain line every 30 s or so.
    progress = progress_counter(steps, description, unit="step", initial=first_step - 1)
    for step in range(first_step, steps + 1):
        model.train()
        loss = train_step(step)
        progress.update(1)
        running_loss = loss if running_loss is None else 0.9 * running_loss + 0.1 * loss
        result.steps_run = step
        if step % eval_every == 0 or step == steps:
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
        if checkpoint is not None and time.perf_counter() - last_save >= checkpoint.every_s and step != steps:
            save(finished=False)
            last_save = time.perf_counter()
    progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.wall_s = wall_before + time.perf_counter() - started
    if checkpoint is not None:
        save(finished=True)
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


def cutout_batch(images: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): per image, a ``size``×``size`` square at a uniformly random
    centre (clipped at the borders, as in the paper) set to zero, which after normalisation is the
    mean image. Returns a new tensor; ``images`` is left as it was."""
    count, _, height, width = images.shape
    centres = torch.stack([torch.randint(0, height, (count,), generator=generator),
                           torch.randint(0, width, (count,), generator=generator)], 1).to(images.device)
    low, high = size // 2, size - size // 2
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = ((rows >= centres[:, 0, None, None] - low) & (rows < centres[:, 0, None, None] + high)
              & (cols >= centres[:, 1, None, None] - low) & (cols < centres[:, 1, None, None] + high))
    return images.masked_fill(inside.unsqueeze(1), 0.0)
