"""AlphaBlend: hand a trained network over to parallel branches with fewer parameters, on an α schedule."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from prune_gym.data import DATASETS, normalize
from prune_gym.envs.base import (
    BUDGET_ENDS,
    Accounting,
    EpochBatches,
    PruningEnv,
    SplitData,
    augmenter,
    check_choice,
    classifier_metrics,
    load_split_data,
    make_settings,
    model_costs,
    set_integer,
    set_real,
    torch_seed,
    train_iterations,
)
from prune_gym.models.blended_cnn import BlendedCNN
from prune_gym.pretraining import PRECISIONS, BackboneRequest, PretrainBudget, pretrained_backbone
from prune_gym.shipped import WEIGHTS_MODES
from prune_gym.training import resolve_device

TASKS = ("classification", "regression")
HOLD, SMALL, MEDIUM, LARGE, FINISH = range(5)
ACTION_NAMES = ("hold", "small", "medium", "large", "finish")
OBSERVATION_FEATURES = ("alpha", "steps_at_alpha", "train_loss", "train_accuracy", "val_task_loss", "val_accuracy",
                        "lr_fraction", "budget_fraction")


@dataclass(frozen=True)
class AlphaBlendSettings:
    """The AlphaBlend family's arguments (see :class:`AlphaBlendEnv`'s Arguments), defaulted and
    validated in one place."""

    dataset: str = "cifar10"
    backbone: str = "cnn4"
    keep_params: float = 0.35
    task: str = "classification"
    budget_steps: int = 30
    iterations_per_step: int | None = 20
    train_subset: int | None = None
    val_images: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    augment: bool = True
    small_step: float = 0.95
    medium_step: float = 0.8
    large_step: float = 0.5
    step_cost: float = 0.01
    ce_weight: float = 1.0
    pretrain_steps: int = PretrainBudget.steps
    pretrain_precision: str = PretrainBudget.precision
    backbone_seed: int = 0
    val_fraction: float = 0.1
    budget_end: str = "truncate"
    data_root: str | None = None
    eval_data: str | None = None
    device: str = "auto"
    weights: str = "auto"

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("weights", self.weights, WEIGHTS_MODES)
        check_choice("task", self.task, TASKS)
        check_choice("pretrain_precision", self.pretrain_precision, PRECISIONS)
        set_real(self, "keep_params", lambda f: 0.0 < f < 1.0, "a fraction strictly between 0 and 1")
        for name in ("budget_steps", "batch_size", "pretrain_steps", "plateau_patience"):
            set_integer(self, name, minimum=1)
        set_integer(self, "iterations_per_step", minimum=1, optional=True)
        set_integer(self, "train_subset", minimum=1, optional=True)
        set_integer(self, "val_images", minimum=1, optional=True)
        set_integer(self, "backbone_seed", minimum=0)
        set_real(self, "lr", lambda lr: lr > 0.0, "a positive learning rate")
        set_real(self, "plateau_factor", lambda f: 0.0 < f < 1.0, "a factor strictly between 0 and 1")
        factors = (self.small_step, self.medium_step, self.large_step)
        if not all(isinstance(f, float | int) and 0.0 < f < 1.0 for f in factors) \
                or not self.small_step > self.medium_step > self.large_step:
            raise ValueError(f"Need 1 > small_step > medium_step > large_step > 0, got {factors}.")
        # A negative cost or weight inverts the task (rewards blending longer or a worse network): refused.
        set_real(self, "step_cost", lambda c: c >= 0.0, "≥ 0 (the cost of a blended step)")
        set_real(self, "ce_weight", lambda w: w >= 0.0, "≥ 0 (the weight of the final cross-entropy)")
        set_real(self, "val_fraction", lambda f: 0.0 < f < 1.0, "a fraction strictly between 0 and 1")
        check_choice("budget_end", self.budget_end, BUDGET_ENDS)

    def backbone_request(self) -> BackboneRequest:
        # The RNP backbone's own request (RNP-CIFAR10-v0's by default), so both families start from
        # one pretrained network: the shipped one, or one cache file.
        return BackboneRequest(self.dataset, self.backbone, seed=self.backbone_seed, val_fraction=self.val_fraction,
                               budget=PretrainBudget(steps=self.pretrain_steps, precision=self.pretrain_precision))


class AlphaBlendEnv(PruningEnv):
    """AlphaBlend: lower α step by step to hand a trained network over to a 65 % smaller one.

    ## Description
    A pretrained plain CNN (the foundation's backbone at full width, from the weights cache) gets
    a parallel low-rank branch per conv layer (:class:`prune_gym.models.blended_cnn.BlendedCNN`):
    each layer outputs ``α · original + (1 − α) · branch``. Over the whole network the branches,
    with the head, hold ``keep_params`` (35 %) of the original parameters. Starting at ``α = 1``
    the agent lowers α; after every change the blended network trains for one step
    (``iterations_per_step`` Adam steps) at that α. The learning rate is reset to ``lr`` whenever
    α drops and halved when the validation loss has not improved for ``plateau_patience`` steps;
    no early stopping. At ``α = 0`` the originals are deleted (real removal) and the remaining
    network is fine-tuned with the rest of the step budget, so every schedule gets the same total
    budget. ``task="classification"`` trains on cross-entropy to the labels;
    ``task="regression"`` on the mean squared error between each output logit and the original
    network's logit (mean over logits and images, not the sum).

    ## Action Space
    ``Discrete(5)``: ``0`` hold α; ``1``/``2``/``3`` multiply α by ``small_step`` (0.95, the report's
    decay of 5 % per step), ``medium_step`` (0.8) or ``large_step`` (0.5); ``4`` jump to ``α = 0``:
    hand over, fine-tune for the remaining budget and end. Every action is always valid
    (:meth:`action_masks` is all true); anything outside the action space raises ``ValueError``.

    ## Observation Space
    ``Box((8,), float32)``: α (0–1); steps spent at the current α as a fraction of the budget;
    mean training loss and accuracy of the last step; validation loss and accuracy of the blended
    network (loss in the task's sense: cross-entropy or logit MSE); current learning rate as a
    fraction of ``lr``; fraction of the step budget used. At reset the training figures are the
    pretrained network's on the training images.

    ## Rewards
    ``−step_cost`` for every step trained with α > 0 (a blended step computes the original *and*
    the branches), and on the last step additionally ``−ce_weight · CE``, the validation
    cross-entropy (nats) of the final pruned network. Defaults ``step_cost = 0.01``,
    ``ce_weight = 1``.

    ## Starting State
    ``α = 1`` (the pretrained network exactly), branches He-initialised from ``self.np_random``.

    ## Episode End
    Terminates after the ``finish`` action (the task's end: handed over and fine-tuned).
    Truncates when the budget of ``budget_steps`` steps is spent with α still above 0 (the
    originals are then deleted without fine-tuning and the final network scored;
    ``budget_end="terminate"``, the v0 id's setting, terminates instead).

    ## Info
    Every ``info`` (reset and step) carries the contract's accounting
    (:data:`~prune_gym.envs.base.ACCOUNTING_KEYS`): ``macs``, ``macs_full``, ``params``,
    ``params_full`` (conv/linear weights and biases, from :mod:`prune_gym.pruning.counting`; a
    blended network counts both parts it computes), ``cross_entropy`` (validation, nats),
    ``val_accuracy``, ``cycle`` (steps taken) and ``test_accuracy`` — measured at reset (the
    unpruned network) and at the end (the pruned network; test split or ``eval_data``), ``None``
    in between; then ``alpha``, ``steps_used``, ``lr``, and at reset and the end ``test_loss``, at
    the end ``test_accuracy_original`` of the unpruned network.

    ## Arguments
    - ``dataset``: ``"cifar10"``, ``"cifar100"``, ``"mnist"`` or ``"synthetic"``; ``backbone``:
      ``"cnn4"``, ``"cnn6"`` or ``"cnn8"``; ``pretrain_steps``, ``pretrain_precision`` (``"fp32"`` or
      ``"bf16"`` autocast), ``backbone_seed``: its pretraining budget and seed (part of the
      weights-cache key). The defaults are ``RNP-CIFAR10-v0``'s request, so both families start
      from the one shipped cnn4.
    - ``weights``: ``"auto"`` (default) loads the backbone shipped with the package when this
      request is shipped (any copy of the dataset; ``prune-gym ship-weights --list``), else the
      weights cache (training on a miss); ``"train"`` never uses shipped weights (trains on your
      copy at ``data_root``); ``"shipped"`` insists on them. See :class:`~prune_gym.envs.rnp.RNPEnv`.
    - ``keep_params``: fraction (0–1) of the original's parameters the final network keeps.
    - ``task``: ``"classification"`` or ``"regression"``.
    - ``budget_steps``: the budget of steps; ``iterations_per_step``: Adam steps per step
      (``None`` = one epoch over the training images); ``train_subset``: use only that many.
    - ``val_images``: score only the first this many validation images every step (``None``: all).
    - ``batch_size``, ``lr``, ``plateau_patience``, ``plateau_factor``; ``augment``: random shifts
      (and flips on CIFAR) as in pretraining.
    - ``small_step``, ``medium_step``, ``large_step``: α multipliers of actions 1–3.
    - ``step_cost``, ``ce_weight``: see Rewards.
    - ``val_fraction``: as the backbone's (so validation images were never trained on).
    - ``budget_end``: ``"truncate"`` (default, the one contract's rule) or ``"terminate"`` (v0).
    - ``data_root``, ``eval_data`` (``.npz`` replacing the test split), ``device``.

    ## Version History
    - v1: a spent budget truncates (the one contract's rule); ``epochs``, ``epoch_cost`` and
      ``info["epochs_used"]`` are ``budget_steps``, ``step_cost`` and ``steps_used`` (they count
      steps of ``iterations_per_step`` Adam steps, not epochs); ``info["val_loss"]`` is
      ``cross_entropy``; ``params`` counts conv/linear weights and biases only (the project's one
      count; v0 counted batch norms too).
    - v0: initial release; a spent budget terminates (``budget_end="terminate"``).
    - (0.3, both ids: the pretrained network is RNP-CIFAR10-v0's backbone at full width — the
      one-cycle recipe, full-width phase then every width — not a single sandwich phase of 1,500
      steps; same observation, actions and rewards.)
    """

    def __init__(self, **kwargs: Any):
        self.settings = make_settings(AlphaBlendSettings, kwargs, "AlphaBlend")
        settings = self.settings
        self.step_factors = {SMALL: settings.small_step, MEDIUM: settings.medium_step, LARGE: settings.large_step}
        self.request = settings.backbone_request()
        self.device = resolve_device(settings.device)
        self.action_space = spaces.Discrete(len(ACTION_NAMES))
        high = np.array([1, 1, np.inf, 1, np.inf, 1, 1, 1], dtype=np.float32)
        self.observation_space = spaces.Box(np.zeros(len(OBSERVATION_FEATURES), np.float32), high, dtype=np.float32)
        self._data: SplitData | None = None
        self.model: nn.Module | None = None

    @property
    def action_names(self) -> tuple[str, ...]:
        return ACTION_NAMES

    # -- lazily loaded backbone, data and reference figures ---------------------------------------

    def _load(self) -> None:
        if self._data is not None:
            return
        settings = self.settings
        backbone, self.pretrain_metrics, _ = pretrained_backbone(self.request, settings.data_root, settings.device,
                                                                 settings.weights)
        # A real dense copy at full width: the "original".
        self.original = backbone.to_dense().eval().to(memory_format=torch.channels_last)
        for parameter in self.original.parameters():
            parameter.requires_grad_(False)
        self._data = load_split_data(settings.dataset, settings.data_root, settings.val_fraction,
                                     settings.train_subset, settings.eval_data, self.device,
                                     settings.val_images)
        data = self._data
        self.costs_full = model_costs(self.original, data.dataset.image_shape)
        with torch.no_grad():
            self._val_teacher_logits = self.original(self._prepare(data.val_images))
        self._train_original = classifier_metrics(self.original, data.train_images, data.train_labels, data,
                                                  self._prepare)
        self._test_original = classifier_metrics(self.original, data.test_images, data.test_labels, data,
                                                 self._prepare)

    @property
    def data(self) -> SplitData:
        self._load()
        assert self._data is not None
        return self._data

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        assert self._data is not None
        # channels_last makes these convolutions ~1.45× faster on CPUs (measured by the foundation).
        return normalize(images, self._data.dataset).contiguous(memory_format=torch.channels_last)

    # -- training ---------------------------------------------------------------------------------

    def _loss_and_logits(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.model is not None
        inputs = self._prepare(images)
        logits = self.model(inputs)
        if self.settings.task == "classification":
            return F.cross_entropy(logits, labels), logits
        with torch.no_grad():
            targets = self.original(inputs)
        return F.mse_loss(logits, targets), logits  # mean over logits and images

    def _validate(self) -> dict[str, float]:
        assert self.model is not None
        data = self.data
        metrics = classifier_metrics(self.model, data.val_images, data.val_labels, data, self._prepare)
        if self.settings.task == "classification":
            task_loss = metrics["cross_entropy"]
        else:
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                logits = self.model(self._prepare(data.val_images))
            self.model.train(was_training)
            task_loss = float(F.mse_loss(logits, self._val_teacher_logits))
        return {**metrics, "task_loss": task_loss}

    def _restart_optimizer(self) -> None:
        """Adam at ``lr`` with a fresh plateau schedule (α dropped, or the model changed)."""
        assert self.model is not None
        settings = self.settings
        self._optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self._scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self._optimizer, mode="min", factor=settings.plateau_factor, patience=settings.plateau_patience)

    def _train_step(self) -> dict[str, float]:
        assert self.model is not None
        iterations = self.settings.iterations_per_step or self._batches.iterations_per_epoch
        metrics = train_iterations(self.model, self._optimizer, self._batches, self._loss_and_logits, iterations,
                                   self._validate, augment=self._augment, description="AlphaBlend step")
        self._scheduler.step(metrics["task_loss"])
        self._steps_used += 1
        return metrics

    # -- the episode ------------------------------------------------------------------------------

    def _begin(self, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        data, settings = self.data, self.settings
        self.model = BlendedCNN(self.original, settings.keep_params, seed=torch_seed(self.np_random)).to(
            self.device, memory_format=torch.channels_last)
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)
        generator = torch.Generator().manual_seed(torch_seed(self.np_random))
        self._batches = EpochBatches(data.train_images, data.train_labels, settings.batch_size, generator)
        self._augment = augmenter(data.dataset, generator) if settings.augment else None
        self._restart_optimizer()
        self._alpha, self._steps_at_alpha, self._steps_used, self._cycle = 1.0, 0, 0, 0
        self._costs = model_costs(self.model, data.dataset.image_shape)
        val = self._validate()
        classification = self.settings.task == "classification"
        self._last = {"train_loss": self._train_original["cross_entropy"] if classification else 0.0,
                      "train_accuracy": self._train_original["accuracy"], **val}
        # At α = 1 the network is the unpruned one: its test figures (computed once) come for free.
        self._test: dict[str, float] | None = self._test_original
        return self._observation(), {**self._family_info(), "test_loss": self._test_original["cross_entropy"]}

    def _advance(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self.model is not None
        self._test = None
        self._cycle += 1
        if action == FINISH:
            return self._finish(finetune=True, reward=0.0)
        if action != HOLD:
            self._alpha *= self.step_factors[action]
            self.model.set_alpha(self._alpha)
            self._steps_at_alpha = 0
            self._restart_optimizer()
            self._costs = model_costs(self.model, self.data.dataset.image_shape)  # both parts run once α < 1
        self._last = self._train_step()
        self._steps_at_alpha += 1
        reward = -self.settings.step_cost
        if self._steps_used >= self.settings.budget_steps:  # budget spent at α > 0: delete the originals as they are
            return self._finish(finetune=False, reward=reward)
        return self._observation(), float(reward), False, False, self._family_info()

    def _finish(self, finetune: bool, reward: float) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Set α = 0, delete the originals, fine-tune with the remaining budget (if asked), end."""
        assert self.model is not None
        self.model.set_alpha(0.0)
        self.model = self.model.handover()
        self._alpha, self._steps_at_alpha = 0.0, 0
        self._costs = model_costs(self.model, self.data.dataset.image_shape)
        self._restart_optimizer()
        while finetune and self._steps_used < self.settings.budget_steps:
            self._last = self._train_step()
            self._steps_at_alpha += 1
        if not finetune or self._steps_at_alpha == 0:
            self._last = {**self._last, **self._validate()}
        reward -= self.settings.ce_weight * self._last["cross_entropy"]
        data = self.data
        self._test = classifier_metrics(self.model, data.test_images, data.test_labels, data, self._prepare)
        info = {**self._family_info(), "test_loss": self._test["cross_entropy"],
                "test_accuracy_original": self._test_original["accuracy"]}
        # finish reaches the task's end; a spent budget is the budget's end (truncation, or v0's termination).
        truncated = not finetune and self.settings.budget_end == "truncate"
        return self._observation(), float(reward), not truncated, truncated, info

    # -- observation, info and accessors ----------------------------------------------------------

    def _observation(self) -> np.ndarray:
        last = self._last
        lr = self._optimizer.param_groups[0]["lr"]
        budget = self.settings.budget_steps
        return np.array([self._alpha, self._steps_at_alpha / budget, last["train_loss"],
                         last["train_accuracy"], last["task_loss"], last["accuracy"], lr / self.settings.lr,
                         self._steps_used / budget], dtype=np.float32)

    def accounting(self) -> Accounting:
        if self.model is None:
            raise RuntimeError("call reset() first.")
        return Accounting(macs=self._costs["macs"], macs_full=self.costs_full["macs"], params=self._costs["params"],
                          params_full=self.costs_full["params"], cycle=self._cycle,
                          cross_entropy=self._last["cross_entropy"], val_accuracy=self._last["accuracy"],
                          test_accuracy=None if self._test is None else self._test["accuracy"])

    def _family_info(self) -> dict[str, Any]:
        return {"alpha": float(self._alpha), "steps_used": int(self._steps_used),
                "lr": float(self._optimizer.param_groups[0]["lr"])}

    def original_model(self) -> nn.Module:
        """A copy of the unpruned network (dense, full width)."""
        self._load()
        return copy.deepcopy(self.original)
