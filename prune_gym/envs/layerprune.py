"""LayerPrune: remove layers of a CNN during training, guided by how non-linear each layer has become."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from prune_gym.data import DATASETS
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
from prune_gym.models.alpha_cnn import DEFAULT_NU_RATE, AlphaCNN, increasing_layer_indices
from prune_gym.training import resolve_device

# Per-layer observation blocks (each padded to max_layers), then the four scalars.
LAYER_FEATURES = ("alive", "alpha", "gamma", "alpha_change")
GLOBAL_FEATURES = ("val_accuracy", "val_cross_entropy", "macs_fraction", "budget_fraction")


@dataclass(frozen=True)
class LayerPruneSettings:
    """The LayerPrune family's arguments (see :class:`LayerPruneEnv`'s Arguments), defaulted and
    validated in one place."""

    dataset: str = "cifar10"
    width: int = 32
    max_layers: int = 6
    stem_stride: int = 2
    pool_before: tuple[int, ...] = ()
    augment: bool = False
    epochs: int = 20
    iterations_per_step: int | None = None
    train_subset: int | None = None
    val_images: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    gamma_lr: float | None = 1e-2
    nu_rate: float = DEFAULT_NU_RATE
    freeze_epochs: int = 1
    mac_weight: float = 1.0
    ce_weight: float = 1.0
    invalid_action_penalty: float = -0.1
    test_every_step: bool = True
    val_fraction: float = 0.2
    budget_end: str = "truncate"
    data_root: str | None = None
    eval_data: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        for name in ("width", "max_layers", "epochs", "batch_size"):
            set_integer(self, name, minimum=1)
        set_integer(self, "stem_stride", minimum=1, maximum=2)
        if not increasing_layer_indices(self.pool_before, self.max_layers):
            raise ValueError(f"pool_before must be a list of increasing layer indices in 1..{self.max_layers} "
                             f"(a 2×2 max-pool before each), got {self.pool_before!r}.")
        object.__setattr__(self, "pool_before", tuple(int(index) for index in self.pool_before))
        set_integer(self, "iterations_per_step", minimum=1, optional=True)
        set_integer(self, "train_subset", minimum=1, optional=True)
        set_integer(self, "val_images", minimum=1, optional=True)
        set_integer(self, "freeze_epochs", minimum=0)
        set_real(self, "lr", lambda lr: lr > 0.0, "a positive learning rate")
        if self.gamma_lr is None:  # None = the weights' rate
            object.__setattr__(self, "gamma_lr", self.lr)
        set_real(self, "gamma_lr", lambda lr: lr > 0.0, "a positive learning rate (or None for lr)")
        set_real(self, "nu_rate", lambda rate: rate > 0.0, "a positive rate")
        # Negative weights invert the task (reward adding MACs or a worse network): refused.
        set_real(self, "mac_weight", lambda w: w >= 0.0, "≥ 0 (the weight of the MACs removed)")
        set_real(self, "ce_weight", lambda w: w >= 0.0, "≥ 0 (the weight of the cross-entropy cost)")
        set_real(self, "invalid_action_penalty", lambda p: p <= 0.0, "≤ 0 (a penalty)")
        set_real(self, "val_fraction", lambda f: 0.0 < f < 1.0, "a fraction strictly between 0 and 1")
        check_choice("budget_end", self.budget_end, BUDGET_ENDS)
        for name in ("test_every_step", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {getattr(self, name)!r}.")


def scale_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [0, 1] (LayerPrune's input convention)."""
    return images.float() / 255.0


class LayerPruneEnv(PruningEnv):
    """LayerPrune: during training, decide after every epoch whether to remove a layer.

    ## Description
    A CNN (:class:`prune_gym.models.alpha_cnn.AlphaCNN`: stem, ``max_layers`` removable 3×3 conv
    layers of equal width, each conv → BN → ``f(x) = x + α·ReLU(−x)``, linear head) is trained from
    scratch with Adam on images scaled to [0, 1]; ``α = σ((σ(γ) − 0.5)·ν_t)`` with a learned ``γ``
    per layer and ``ν_t = nu_rate · t`` (``t`` optimiser steps so far). ``α → 1`` is a ReLU,
    ``α → 0`` the identity (a purely linear layer, a candidate for removal). Each environment step
    first applies the action (possibly removing a layer: a new model with one fewer layer receives
    every remaining layer's weights and its γ/α histories), then trains for one epoch (or
    ``iterations_per_step`` optimiser steps) and evaluates on the validation split. After a removal
    the convolutional layers can be frozen for ``freeze_epochs`` steps (only the head trains).

    ## Action Space
    ``Discrete(max_layers + 1)``: ``0`` keeps training; ``l ≥ 1`` removes layer ``l − 1`` (indices
    of the original network, which stay fixed as layers go). :meth:`action_masks` marks the
    removable layers (for sb3-contrib's ``MaskablePPO``). Removing a layer that is already gone is
    *invalid*: the step then keeps training as action 0 would, adds ``invalid_action_penalty`` to
    the reward and reports ``info["invalid_action"] = True``. Anything outside the action space
    raises ``ValueError``.

    ## Observation Space
    ``Box((4·max_layers + 4,), float32)``: four blocks of ``max_layers`` entries in original layer
    order — alive flag (0/1), ``α`` (0–1), ``γ`` (unbounded) and the change of ``α`` since the
    previous step (−1..1); dead layers read 0 — then validation accuracy (0–1), validation
    cross-entropy (nats, ≥ 0), fraction of the full model's MACs kept (0–1) and fraction of the
    epoch budget used (0–1).

    ## Rewards
    ``mac_weight · (MACs removed this step / MACs of the full model) − ce_weight · (validation CE
    after the step − validation CE before it)`` (+ ``invalid_action_penalty`` on an invalid action).
    Summed over an episode this telescopes to ``mac_weight · (fraction of MACs removed) −
    ce_weight · (final − initial validation CE)``: the return values the final trade-off only, and
    the initial CE (the untrained network's) is fixed by the seed. Defaults ``mac_weight = 1``,
    ``ce_weight = 1``, ``invalid_action_penalty = −0.1``.

    ## Starting State
    A freshly initialised network (all layers alive, ``t = 0``, so every ``α = 0.5``), weights and
    the training order drawn from ``self.np_random``.

    ## Episode End
    Truncates after ``epochs`` steps: the epoch budget is spent (``budget_end="terminate"``, the
    v0 ids' setting, terminates instead); never terminates otherwise.

    ## Info
    Every ``info`` (reset and step) carries the contract's accounting
    (:data:`~prune_gym.envs.base.ACCOUNTING_KEYS`): ``macs``, ``macs_full`` (per image),
    ``params``, ``params_full`` (conv/linear weights and biases; from
    :mod:`prune_gym.pruning.counting`), ``cross_entropy`` (mean validation cross-entropy, nats),
    ``val_accuracy``, ``test_accuracy`` (on the test split, or ``eval_data``; never part of the
    observation or reward; ``None`` between reset and the last step with ``test_every_step=False``)
    and ``cycle`` (steps taken); then ``test_loss``, ``depth``, ``removed`` (original index removed
    this step, or −1), ``invalid_action`` and, after a step,
    ``train_loss`` and ``train_accuracy``. The γ/α histories of every layer (removed ones up to
    their removal) are in :meth:`layer_histories`.

    ## Arguments
    - ``dataset``: ``"cifar10"``, ``"cifar100"``, ``"mnist"`` or ``"synthetic"``; ``data_root`` as for every env.
    - ``width``, ``max_layers``: channels of every layer and removable layers at the start.
    - ``stem_stride`` (1 or 2, default 2) and ``pool_before`` (layer indices with a fixed 2×2
      max-pool before them, default none): the network's resolutions (see
      :class:`~prune_gym.models.alpha_cnn.AlphaCNN`). v2's are 1 and ``[2, 4]``: on CIFAR-10
      layers 0–1 at 16×16, 2–3 at 8×8 and 4–5 at 4×4.
    - ``augment``: random shifts (and flips on CIFAR) of every training batch (default off).
    - ``epochs``: the budget of environment steps (default 20, as in the method's report).
    - ``iterations_per_step``: optimiser steps per environment step; ``None`` = one epoch over the
      (subset of the) training split. ``train_subset``: use only this many training images.
    - ``val_images``: score only the first this many validation images every step (``None``: all).
    - ``batch_size``, ``lr`` (Adam), ``nu_rate``, ``gamma_lr``: Adam learning rate of the γ's
      (``None`` = ``lr``). Default 0.01: with ``lr`` = 0.001 a γ moves at most ~0.001 per Adam
      step, ~1.3 in the default budget of 1,280 steps, while α < 0.01 at ``ν = 12.8`` needs
      ``γ < −1.8``; measured on the CIFAR-10 subset, ``gamma_lr = 0.001`` left every α above 0.4
      after 6 epochs and ``0.01`` took the last layer's α to 0.036 after 11.
    - ``freeze_epochs``: steps with frozen convolutional layers after each removal (0 = none).
    - ``mac_weight``, ``ce_weight``, ``invalid_action_penalty``: see Rewards.
    - ``val_fraction``: held-out fraction of the training images (default 0.2: an 80/20 split).
    - ``budget_end``: ``"truncate"`` (default, the one contract's rule) or ``"terminate"`` (v0).
    - ``eval_data``: ``.npz`` whose ``x_test``/``y_test`` replace the test split for ``test_accuracy``.
    - ``test_every_step``: score the test split after every step (default) or only at reset and
      after the last step (``False``, the arenas': ``test_accuracy`` and ``test_loss`` are ``None``
      in between). Observation, reward and dynamics are the same either way.
    - ``device``: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    ## Version History
    - v2 (``LayerPrune-CIFAR10-v2`` only): a larger network — ``stem_stride=1``, ``width=64``,
      ``pool_before=[2, 4]`` (layers 0–1 at 16×16, 2–3 at 8×8, 4–5 at 4×4; 26.5 M MACs/image
      against v1's 3.8 M) — trained with ``augment=True``; actions, observation and reward as v1.
    - v1: the epoch budget's end truncates (the one contract's rule); ``info["val_loss"]`` is
      ``cross_entropy``; ``params`` counts conv/linear weights and biases only (the project's one
      count; v0 counted every parameter, batch norms and γ's included).
    - v0: initial release; the budget's end terminates (``budget_end="terminate"``).
    """

    def __init__(self, **kwargs: Any):
        self.settings = make_settings(LayerPruneSettings, kwargs, "LayerPrune")
        max_layers = self.max_layers = self.settings.max_layers
        self.epochs = self.settings.epochs
        self.device = resolve_device(self.settings.device)
        self.action_space = spaces.Discrete(max_layers + 1)
        zeros, ones = np.zeros(max_layers, np.float32), np.ones(max_layers, np.float32)
        low = np.concatenate([zeros, zeros, np.full(max_layers, -np.inf, np.float32), -ones, [0, 0, 0, 0]])
        high = np.concatenate([ones, ones, np.full(max_layers, np.inf, np.float32), ones, [1, np.inf, 1, 1]])
        self.observation_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self._data: SplitData | None = None
        self.model: AlphaCNN | None = None

    # -- lazily loaded data -------------------------------------------------------------------

    @property
    def data(self) -> SplitData:
        if self._data is None:
            settings = self.settings
            self._data = load_split_data(settings.dataset, settings.data_root, settings.val_fraction,
                                         settings.train_subset, settings.eval_data, self.device,
                                         settings.val_images)
        return self._data

    # -- the episode ------------------------------------------------------------------------------

    def _build_optimizer(self) -> torch.optim.Adam:
        assert self.model is not None
        gammas = [layer.activation.gamma for layer in self.model.layers]
        ids = {id(gamma) for gamma in gammas}
        others = [parameter for parameter in self.model.parameters() if id(parameter) not in ids]
        settings = self.settings
        groups = [{"params": others, "lr": settings.lr}]
        if gammas:
            groups.append({"params": gammas, "lr": settings.gamma_lr})
        return torch.optim.Adam(groups)

    def _loss_and_logits(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.model is not None
        if self.model.features_frozen:  # frozen layers keep their BN statistics too: only the head trains
            for module in self.model.feature_modules():
                module.eval()
        logits = self.model(scale_to_unit(images))
        return F.cross_entropy(logits, labels), logits

    def _validate(self) -> dict[str, float]:
        assert self.model is not None
        return classifier_metrics(self.model, self.data.val_images, self.data.val_labels, self.data, scale_to_unit)

    def _begin(self, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        data, settings = self.data, self.settings
        channels = data.dataset.image_shape[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(self.np_random))
            self.model = AlphaCNN(channels, data.dataset.num_classes, settings.width, settings.max_layers,
                                  settings.nu_rate, settings.stem_stride, settings.pool_before).to(self.device)
        self._optimizer = self._build_optimizer()
        self._batches = EpochBatches(data.train_images, data.train_labels, settings.batch_size,
                                     torch.Generator().manual_seed(torch_seed(self.np_random)))
        # Its own generator, drawn after the batches' so that augment=False episodes are unchanged.
        self._augment = augmenter(data.dataset, torch.Generator().manual_seed(torch_seed(self.np_random))) \
            if settings.augment else None
        self._costs_full = model_costs(self.model, data.dataset.image_shape)
        self._costs = dict(self._costs_full)
        self._cycle, self._frozen_left = 0, 0
        self._removed: dict[int, int] = {}  # original index → cycle of its removal
        self._removed_histories: dict[int, tuple[list[float], list[float]]] = {}
        self.model.record_history()
        self._val = self._validate()
        self._test = self._score_test()
        return self._observation(), {**self._family_info(), "removed": -1, "invalid_action": False}

    @property
    def action_names(self) -> tuple[str, ...]:
        return ("keep training", *(f"remove layer {layer}" for layer in range(self.max_layers)))

    def _advance(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self.model is not None
        settings = self.settings
        invalid = action > 0 and not self._alive(action - 1)
        previous_ce, previous_macs = self._val["cross_entropy"], self._costs["macs"]
        removed = -1
        if action > 0 and not invalid:
            removed = action - 1
            self._remove(removed)
        # Freezing applies to the steps right after a removal; the counter is set by _remove.
        self.model.set_features_frozen(self._frozen_left > 0)
        self._frozen_left = max(0, self._frozen_left - 1)
        iterations = settings.iterations_per_step or self._batches.iterations_per_epoch
        metrics = train_iterations(self.model, self._optimizer, self._batches, self._loss_and_logits, iterations,
                                   self._validate, after_step=self.model.advance, augment=self._augment,
                                   description="LayerPrune step")
        self.model.set_features_frozen(False)
        self.model.record_history()
        self._val = {"accuracy": metrics["accuracy"], "cross_entropy": metrics["cross_entropy"]}
        self._cycle += 1
        budget_spent = self._cycle >= settings.epochs
        self._test = self._score_test() if settings.test_every_step or budget_spent else None
        reward = (settings.mac_weight * (previous_macs - self._costs["macs"]) / self._costs_full["macs"]
                  - settings.ce_weight * (self._val["cross_entropy"] - previous_ce))
        if invalid:
            reward += settings.invalid_action_penalty
        info = {**self._family_info(), "removed": removed, "invalid_action": invalid,
                "train_loss": metrics["train_loss"], "train_accuracy": metrics["train_accuracy"]}
        truncated = budget_spent and settings.budget_end == "truncate"
        return self._observation(), float(reward), budget_spent and not truncated, truncated, info

    def _remove(self, origin: int) -> None:
        assert self.model is not None
        position = [layer.origin for layer in self.model.layers].index(origin)
        layer = self.model.layers[position]
        self._removed_histories[origin] = (list(layer.gamma_history), list(layer.alpha_history))
        self._removed[origin] = self._cycle
        self.model = self.model.without_layer(position)
        self._optimizer = self._build_optimizer()
        self._costs = model_costs(self.model, self.data.dataset.image_shape)
        self._frozen_left = self.settings.freeze_epochs

    # -- observation, info and accessors ----------------------------------------------------------

    def _alive(self, origin: int) -> bool:
        return self.model is not None and any(layer.origin == origin for layer in self.model.layers)

    def _observation(self) -> np.ndarray:
        assert self.model is not None
        blocks = np.zeros((len(LAYER_FEATURES), self.max_layers), dtype=np.float32)
        for layer in self.model.layers:
            alphas = layer.alpha_history
            change = alphas[-1] - alphas[-2] if len(alphas) > 1 else 0.0
            blocks[:, layer.origin] = (1.0, alphas[-1], layer.gamma_history[-1], change)
        scalars = np.array([self._val["accuracy"], self._val["cross_entropy"],
                            self._costs["macs"] / self._costs_full["macs"], self._cycle / self.epochs],
                           dtype=np.float32)
        return np.concatenate([blocks.ravel(), scalars]).astype(np.float32)

    def _score_test(self) -> dict[str, float]:
        # By default every step reports it, so comparisons can plot accuracy along the whole episode;
        # nothing the agent sees uses it. With test_every_step=False (the arenas) only reset and the
        # last step do: on the 7,500 CIFAR-10 test images it is most of an arena step.
        assert self.model is not None
        return classifier_metrics(self.model, self.data.test_images, self.data.test_labels, self.data, scale_to_unit)

    def accounting(self) -> Accounting:
        if self.model is None:
            raise RuntimeError("call reset() first.")
        return Accounting(macs=self._costs["macs"], macs_full=self._costs_full["macs"], params=self._costs["params"],
                          params_full=self._costs_full["params"], cycle=self._cycle,
                          cross_entropy=self._val["cross_entropy"], val_accuracy=self._val["accuracy"],
                          test_accuracy=None if self._test is None else self._test["accuracy"])

    def _family_info(self) -> dict[str, Any]:
        assert self.model is not None
        return {"test_loss": None if self._test is None else self._test["cross_entropy"], "depth": self.model.depth}

    def action_masks(self) -> np.ndarray:
        """Valid actions (bool, ``max_layers + 1``): keep training, and removing each layer still alive."""
        return np.array([True] + [self._alive(origin) for origin in range(self.max_layers)], dtype=bool)

    def layer_histories(self) -> dict[int, dict[str, Any]]:
        """Per original layer: ``gamma`` and ``alpha`` after every step so far (index 0 = at reset;
        a removed layer's history stops at its removal) and ``removed_at`` (the step, or None)."""
        assert self.model is not None, "call reset() first"
        histories = {origin: {"gamma": gammas, "alpha": alphas, "removed_at": self._removed[origin]}
                     for origin, (gammas, alphas) in self._removed_histories.items()}
        for layer in self.model.layers:
            histories[layer.origin] = {"gamma": list(layer.gamma_history), "alpha": list(layer.alpha_history),
                                       "removed_at": None}
        return dict(sorted(histories.items()))
