"""The contract every environment family speaks, and what the training-time families share.

The contract (:class:`PruningEnv`, the base of every single environment):

* **Accounting** — every ``info``, at reset and after every step, carries :data:`ACCOUNTING_KEYS`
  from one :class:`Accounting` object: ``macs`` and ``macs_full`` (MACs per image, from
  :mod:`prune_gym.pruning.counting`), ``params`` and ``params_full`` (that module's one parameter
  count), ``cross_entropy`` (nats: the cross-entropy the family's reward trades against cost —
  RNP's of the episode's image, the training families' mean over the validation split),
  ``val_accuracy`` and ``test_accuracy`` (fractions 0–1) and ``cycle`` (environment steps taken in
  this episode). A figure a family does not define at that moment is ``None`` (in a vector env:
  absent from the ``_key`` mask). A family adds its own keys beside them; it never rebuilds these.
* **Settings** — one frozen, defaulted dataclass per family, validated in its ``__post_init__``
  with the helpers below and read by the single and the vector env alike (:func:`make_settings`).
* **Actions** — one validation (:func:`check_action`, :func:`check_actions`) for single and vector
  envs: integers of the action space only (a float such as 2.7 is refused, not truncated); a
  ``Box`` action space (MaskOffset's default) takes finite arrays inside the box only
  (:func:`check_box_action`); and
  ``action_masks()`` (bool, one entry per action) on every ``Discrete`` env, as sb3-contrib's
  ``MaskablePPO`` expects.
* **Episode end** — Gymnasium's rule: reaching the task's end *terminates*; running out of a budget
  (a step or epoch budget) *truncates*. Each family's docstring says which is which.

The rest of this module is what the training-time families (DropNet, LayerPrune, AlphaBlend)
share: data splits, minibatches, the per-step training helper and cost measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from numbers import Integral, Real
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from prune_gym.data import ImageDataset, load_dataset, load_npz
from prune_gym.pruning.counting import count_macs, count_params
from prune_gym.training import augment_batch, evaluate_classifier, train_loop

# ----------------------------------------------------------------------------------------------
# The contract
# ----------------------------------------------------------------------------------------------

# The accounting every environment reports in every ``info`` (comparisons and agents read them).
ACCOUNTING_KEYS = ("macs", "macs_full", "params", "params_full", "cross_entropy", "val_accuracy", "test_accuracy",
                   "cycle")


@dataclass(frozen=True)
class Accounting:
    """What a network costs and scores at one moment of an episode (see the module docstring).

    Attributes:
        macs, macs_full: MACs per image now and of the unpruned network.
        params, params_full: conv/linear weights and biases of the units kept, now and unpruned.
        cross_entropy: nats, or None where the family has none at this moment.
        val_accuracy, test_accuracy: fractions 0–1, or None where not measured.
        cycle: environment steps taken in this episode (0 at reset).
    """

    macs: int
    macs_full: int
    params: int
    params_full: int
    cycle: int
    cross_entropy: float | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None

    def as_info(self) -> dict[str, Any]:
        """The :data:`ACCOUNTING_KEYS` as Python scalars (``None`` where undefined)."""
        def scalar(value: Any, kind: type) -> Any:
            return None if value is None else kind(value)

        return {"macs": int(self.macs), "macs_full": int(self.macs_full), "params": int(self.params),
                "params_full": int(self.params_full), "cross_entropy": scalar(self.cross_entropy, float),
                "val_accuracy": scalar(self.val_accuracy, float), "test_accuracy": scalar(self.test_accuracy, float),
                "cycle": int(self.cycle)}


class PruningEnv(gym.Env):
    """The shared base of every family's single environment: ``reset``/``step`` templates that
    validate actions, track whether an episode is running and put the same accounting in every
    ``info``. A family supplies the hooks :meth:`_begin`, :meth:`_advance` and :meth:`accounting`
    (and :attr:`action_names` for its error messages); it does not build the accounting dict."""

    metadata = {"render_modes": []}
    action_space: spaces.Discrete | spaces.Box
    _running: bool = False

    # -- hooks ------------------------------------------------------------------------------------

    def _begin(self, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode (``self.np_random`` is seeded): the observation and family-specific info."""
        raise NotImplementedError

    def _advance(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply a validated action (an int; a float32 array for a Box): observation, reward,
        terminated, truncated, family-specific info."""
        raise NotImplementedError

    def accounting(self) -> Accounting:
        """The accounting of the current state."""
        raise NotImplementedError

    @property
    def action_names(self) -> tuple[str, ...]:
        """What each action does, for error messages (default: the action numbers)."""
        return tuple(str(action) for action in range(self.action_space.n))

    def action_masks(self) -> np.ndarray:
        """Which actions are valid now (bool, one per action); by default all of them."""
        return np.ones(self.action_space.n, dtype=bool)

    # -- templates ----------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        observation, extra = self._begin(dict(options or {}))
        self._running = True
        return observation, {**self.accounting().as_info(), **extra}

    def step(self, action):
        if not self._running:
            raise RuntimeError("The episode is over (or never started): call reset() before step().")
        if isinstance(self.action_space, spaces.Box):
            chosen = check_box_action(action, self.action_space)
        else:
            chosen = check_action(action, self.action_space, self.action_names)
        observation, reward, terminated, truncated, extra = self._advance(chosen)
        self._running = not (terminated or truncated)
        return observation, float(reward), bool(terminated), bool(truncated), {**self.accounting().as_info(), **extra}


def _describe_actions(names: tuple[str, ...]) -> str:
    return ", ".join(f"{index} {name}" if name != str(index) else name for index, name in enumerate(names))


def check_action(action: Any, space: spaces.Discrete, names: tuple[str, ...] = ()) -> int:
    """``action`` as a Python int if it is an integer of ``space``; else a ``ValueError`` that lists
    the valid actions. Floats are refused even when integral-valued (2.7 must not act as 2)."""
    value = np.asarray(action)
    if value.shape == () and np.issubdtype(value.dtype, np.integer) and not np.issubdtype(value.dtype, np.bool_):
        if space.start <= int(value) < space.start + space.n:
            return int(value)
    raise ValueError(f"Invalid action {action!r}: expected an integer in {space.start}..{space.start + space.n - 1}"
                     + (f" ({_describe_actions(names)})." if names else "."))


def check_box_action(action: Any, space: spaces.Box) -> np.ndarray:
    """``action`` as a float32 array of ``space``'s shape if it is a finite real array inside the
    box; else a ``ValueError`` saying what was expected (bools and strings are refused)."""
    value = np.asarray(action)
    if value.dtype.kind in "iuf" and value.size == int(np.prod(space.shape)):
        value = value.astype(np.float32).reshape(space.shape)
        if np.isfinite(value).all() and space.contains(value):
            return value
    raise ValueError(f"Invalid action {action!r}: expected a float array of shape {space.shape} with values in "
                     f"[{space.low.min()}, {space.high.max()}].")


def check_actions(actions: Any, space: spaces.Discrete, num_envs: int) -> np.ndarray:
    """A vector env's actions as int64 (one per sub-env), validated as :func:`check_action` does."""
    values = np.asarray(actions)
    valid = (values.shape == (num_envs,) and np.issubdtype(values.dtype, np.integer)
             and not np.issubdtype(values.dtype, np.bool_))
    if valid and ((values >= space.start) & (values < space.start + space.n)).all():
        return values.astype(np.int64)
    raise ValueError(f"Invalid actions: expected {num_envs} integers in {space.start}..{space.start + space.n - 1} "
                     f"(an integer array of shape ({num_envs},)), got dtype {values.dtype}, shape {values.shape} "
                     f"and values {np.unique(values)[:8]}.")


# -- settings -----------------------------------------------------------------------------------------

SettingsT = TypeVar("SettingsT")


def make_settings(settings_class: type[SettingsT], kwargs: Mapping[str, Any], family: str) -> SettingsT:
    """``settings_class(**kwargs)``; an unknown name is a ``TypeError`` that lists the valid ones."""
    names = [field.name for field in fields(settings_class)]  # type: ignore[arg-type]
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise TypeError(f"Unknown {family} arguments {unknown}; valid arguments: {sorted(names)}.")
    return settings_class(**kwargs)


def set_integer(settings: Any, name: str, minimum: int | None = None, maximum: int | None = None,
                optional: bool = False) -> None:
    """Validate ``settings.<name>`` as an integer in [minimum, maximum] and store it as an ``int``.

    Integral numbers of any type are accepted (``np.int64(2)``, ``4.0``); ``2.5``, strings and
    bools are a ``ValueError`` naming the argument. ``optional`` accepts ``None``."""
    value = getattr(settings, name)
    if value is None and optional:
        return
    integral = isinstance(value, Integral) or (isinstance(value, Real) and float(value).is_integer())
    if isinstance(value, bool) or not integral:
        raise ValueError(f"{name} must be an integer{_range(minimum, maximum)}"
                         f"{' or None' if optional else ''}, got {value!r}.")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{name} must be an integer{_range(minimum, maximum)}, got {value!r}.")
    object.__setattr__(settings, name, number)


def set_real(settings: Any, name: str, valid: Callable[[float], bool], expected: str) -> None:
    """Validate ``settings.<name>`` as a real number for which ``valid`` holds; store it as ``float``."""
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, Real) or not np.isfinite(float(value)) \
            or not valid(float(value)):
        raise ValueError(f"{name} must be {expected}, got {value!r}.")
    object.__setattr__(settings, name, float(value))


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """A ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in {minimum}..{maximum}"
    if minimum is not None:
        return f" ≥ {minimum}"
    return f" ≤ {maximum}" if maximum is not None else ""


# What a spent step/epoch budget does (``budget_end`` of the training families' settings): the
# contract's rule is to truncate; ``"terminate"`` keeps the v0 ids' original behaviour.
BUDGET_ENDS = ("truncate", "terminate")


# ----------------------------------------------------------------------------------------------
# What the training-time families share
# ----------------------------------------------------------------------------------------------


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
    val_images: int | None = None,
) -> SplitData:
    """The train/validation/test images of ``dataset_name``.

    Args:
        val_fraction: fraction of the training images held out for validation (seeded, fixed).
        train_subset: keep only this many training images (a fixed, seeded choice, the same in every
            episode) to make steps cheap; ``None`` keeps all of them.
        eval_data: an ``.npz`` in the shared layout whose ``x_test``/``y_test`` replace the test split.
        val_images: keep only the first this many validation images (the held-out split stays the
            same; on the full CIFAR-10 copy scoring all 5,000–10,000 of them every step costs more
            than the step's training); ``None`` keeps all of them.
    """
    dataset = load_dataset(dataset_name, data_root)
    x_train, y_train = dataset.split("train", val_fraction)
    if train_subset is not None:
        if train_subset < 1:
            raise ValueError(f"train_subset must be ≥ 1 (or None for all images), got {train_subset}.")
        chosen = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(0))[:train_subset].sort().values
        x_train, y_train = x_train[chosen], y_train[chosen]
    x_val, y_val = dataset.split("val", val_fraction)
    if val_images is not None:
        if val_images < 1:
            raise ValueError(f"val_images must be ≥ 1 (or None for all images), got {val_images}.")
        x_val, y_val = x_val[:val_images], y_val[:val_images]
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
    """``macs`` (per image) and ``params`` (conv/linear weights and biases) of ``model``, from the
    project's one counter."""
    return {"macs": count_macs(model, image_shape), "params": count_params(model, image_shape)}


def torch_seed(rng) -> int:
    """A torch seed drawn from an environment's ``np_random``."""
    return int(rng.integers(2**31 - 1))
