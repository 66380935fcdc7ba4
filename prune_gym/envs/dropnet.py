"""DropNet (Tan & Motani, ICML 2020) as a Gymnasium environment: one drop-and-retrain cycle per step.

DropNet prunes iteratively: train, score every node/filter by its mean absolute post-activation
over the training images, drop a fraction of the remaining units, rewind the survivors to their
initial weights θ0, retrain with early stopping, and repeat until validation accuracy falls below
κ times the original. :class:`DropNetEnv` makes each drop an action; the six DropNet rules are
actions (or, with ``action_mode="layer"``, which layer loses units).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

from prune_gym.data import DATASETS, ImageDataset, normalize
from prune_gym.envs.base import (
    Accounting,
    PruningEnv,
    check_choice,
    load_split_data,
    make_settings,
    set_integer,
    set_real,
)
from prune_gym.models.masked_net import MaskedNet, get_masked_net_spec
from prune_gym.pruning.counting import count_macs, count_params
from prune_gym.pruning.importance import mean_abs_activation
from prune_gym.pruning.masks import DROP_RULES, can_drop, drop_in_layer, select_drop
from prune_gym.training import evaluate_classifier, resolve_device, train_loop

ACTION_MODES = ("rule", "layer")
RULE_ACTIONS = (*DROP_RULES, "stop")

# Observation layout: per layer (padded to MAX_LAYERS) the fraction of units kept and the mean,
# std, min and max score of the kept units relative to that layer's mean score in the unpruned
# network; then validation accuracy and loss relative to the unpruned network, MAC fraction and
# cycle / max_cycles. Every entry is clipped to [0, OBS_CLIP].
MAX_LAYERS = 8
LAYER_FEATURES = 5
GLOBAL_FEATURES = 4
OBS_SIZE = MAX_LAYERS * LAYER_FEATURES + GLOBAL_FEATURES
OBS_CLIP = 10.0


@dataclass(frozen=True)
class DropNetSettings:
    """The DropNet family's arguments (see :class:`DropNetEnv`'s Arguments), defaulted and
    validated in one place."""

    dataset: str = "mnist"
    network: str = "conv64-conv32"
    action_mode: str = "rule"
    drop_fraction: float = 0.2
    kappa: float = 0.98
    mac_weight: float = 1.0
    ce_weight: float = 1.0
    max_epochs: int = 8
    patience: int = 2
    batch_size: int = 32
    lr: float = 1e-3
    min_units: int = 1
    max_cycles: int = 30
    data_root: str | None = None
    eval_data: str | None = None
    val_fraction: float = 0.1
    train_subset: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        spec = get_masked_net_spec(self.network)
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("action_mode", self.action_mode, ACTION_MODES)
        if len(spec.layers) > MAX_LAYERS:
            raise ValueError(f"network {self.network!r} has {len(spec.layers)} layers; observations hold {MAX_LAYERS}.")
        set_real(self, "drop_fraction", lambda p: 0.0 < p <= 1.0, "a fraction in (0, 1], e.g. 0.2")
        set_real(self, "kappa", lambda k: 0.0 <= k <= 1.0, "a fraction in [0, 1], e.g. 0.98")
        # A negative weight inverts the task (rewards adding MACs or a worse network): refused.
        set_real(self, "mac_weight", lambda w: w >= 0.0, "≥ 0 (the weight of the MACs removed)")
        set_real(self, "ce_weight", lambda w: w >= 0.0, "≥ 0 (the weight of the cross-entropy cost)")
        for name in ("max_epochs", "patience", "batch_size", "max_cycles"):
            set_integer(self, name, minimum=1)
        set_real(self, "lr", lambda lr: lr > 0.0, "a positive learning rate")
        set_integer(self, "min_units", minimum=1, maximum=min(layer.units for layer in spec.layers))
        set_real(self, "val_fraction", lambda f: 0.0 < f < 1.0, "a fraction strictly between 0 and 1")
        set_integer(self, "train_subset", minimum=1, optional=True)

    @property
    def num_layers(self) -> int:
        return len(get_masked_net_spec(self.network).layers)

    def training_key(self) -> tuple:
        """Everything that determines a trained network besides its masks and seed."""
        return (self.dataset, self.network, self.max_epochs, self.patience, self.batch_size, self.lr,
                self.data_root, self.val_fraction, self.train_subset, self.device)


@dataclass
class TrainedNetwork:
    """A network trained from θ0 under fixed masks, with its validation/test figures and scores."""

    state: dict[str, torch.Tensor]
    val_accuracy: float
    val_cross_entropy: float
    test_accuracy: float
    scores: list[np.ndarray]
    epochs: int


class _DropNetCore:
    """Lazily loaded data, the model, and training from θ0 under a mask (shared by reset and step)."""

    # The unpruned network trained from a given seed is the same for every policy: processes that
    # run several policies on the same seeds (``prune-gym compare``) train it once.
    _INITIAL: OrderedDict[tuple, tuple[dict[str, torch.Tensor], TrainedNetwork]] = OrderedDict()
    _INITIAL_LIMIT = 16

    def __init__(self, settings: DropNetSettings):
        self.settings = settings
        self.ready = False
        self._cost_cache: dict[tuple[int, ...], tuple[int, int]] = {}

    def load(self) -> None:
        if self.ready:
            return
        settings = self.settings
        self.device = resolve_device(settings.device)
        splits = load_split_data(settings.dataset, settings.data_root, settings.val_fraction,
                                 settings.train_subset, settings.eval_data, self.device)
        self.dataset: ImageDataset = splits.dataset
        self.x_val, self.y_val = splits.val_images, splits.val_labels
        self.x_test, self.y_test = splits.test_images, splits.test_labels
        # Normalised once: every cycle trains on the same images, so per-batch normalisation would
        # repeat the same work every epoch of every cycle.
        self.train_inputs = normalize(splits.train_images, self.dataset)
        self.train_labels = splits.train_labels
        self.model = self.build(seed=0)
        shape = self.dataset.image_shape
        self.macs_full = count_macs(self.model, shape)
        self.params_full = count_params(self.model, shape)
        self.ready = True

    def build(self, seed: int) -> MaskedNet:
        torch.manual_seed(seed)
        spec = get_masked_net_spec(self.settings.network)
        return MaskedNet(spec, self.dataset.image_shape, self.dataset.num_classes).to(self.device)

    def macs(self, keep: list[np.ndarray]) -> int:
        return self._costs(keep)[0]

    def params(self, keep: list[np.ndarray]) -> int:
        return self._costs(keep)[1]

    def _costs(self, keep: list[np.ndarray]) -> tuple[int, int]:
        """MACs and params of the masked network. Both depend only on the units kept per layer, and
        every step asks for them twice (observation and info), so each count is traced once."""
        kept = tuple(int(mask.sum()) for mask in keep)
        if kept not in self._cost_cache:
            units = dict(zip(self.model.layer_names, kept))
            shape = self.dataset.image_shape
            self._cost_cache[kept] = (count_macs(self.model, shape, units), count_params(self.model, shape, units))
        return self._cost_cache[kept]

    def initial(self, seed: int) -> tuple[dict[str, torch.Tensor], TrainedNetwork]:
        """θ0 drawn from ``seed`` and the unpruned network trained from it (cached per process)."""
        self.load()
        key = (self.settings.training_key(), self.dataset.fingerprint, self.settings.eval_data, seed)
        if key not in self._INITIAL:
            theta0 = {name: value.clone() for name, value in self.build(seed).state_dict().items()}
            full = [np.ones(layer.units, dtype=bool) for layer in self.model.spec.layers]
            self._INITIAL[key] = (theta0, self.train_from(theta0, full, seed))
            while len(self._INITIAL) > self._INITIAL_LIMIT:
                self._INITIAL.popitem(last=False)
        self._INITIAL.move_to_end(key)
        return self._INITIAL[key]

    def rewind(self, theta0: dict[str, torch.Tensor], keep: list[np.ndarray]) -> None:
        """Set every weight of the model back to ``theta0`` and its masks to ``keep``."""
        self.model.load_state_dict(theta0)
        self.model.set_masks([torch.from_numpy(mask) for mask in keep])

    def train_from(self, theta0: dict[str, torch.Tensor], keep: list[np.ndarray], seed: int) -> TrainedNetwork:
        """Rewind to ``theta0``, apply ``keep`` and train with Adam and early stopping on the
        validation cross-entropy. Deterministic given (θ0, masks, seed): batches are drawn from a
        generator seeded with ``seed``, so retraining an architecture reproduces it exactly."""
        settings, model = self.settings, self.model
        self.rewind(theta0, keep)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        generator = torch.Generator().manual_seed(seed)
        count = len(self.train_labels)
        steps_per_epoch = math.ceil(count / settings.batch_size)
        order: list[torch.Tensor] = []

        def train_step(step: int) -> float:
            position = (step - 1) % steps_per_epoch
            if position == 0:
                order[:] = [torch.randperm(count, generator=generator).to(self.device)]
            rows = order[0][position * settings.batch_size:(position + 1) * settings.batch_size]
            loss = F.cross_entropy(model(self.train_inputs[rows]), self.train_labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.item()

        def evaluate() -> dict[str, float]:
            scores = evaluate_classifier(model.forward_in_chunks, self.x_val, self.y_val, self.dataset, self.device)
            return {"score": -scores["cross_entropy"], "val_accuracy": scores["accuracy"],
                    "val_cross_entropy": scores["cross_entropy"]}

        result = train_loop(model, train_step, evaluate, settings.max_epochs * steps_per_epoch, steps_per_epoch,
                            patience=settings.patience, description=f"train {settings.network}")
        return self._measure(result.best_step // steps_per_epoch)

    @torch.no_grad()
    def _measure(self, epochs: int) -> TrainedNetwork:
        model = self.model.eval()
        val = evaluate_classifier(model.forward_in_chunks, self.x_val, self.y_val, self.dataset, self.device)
        test = evaluate_classifier(model.forward_in_chunks, self.x_test, self.y_test, self.dataset, self.device)
        batches = (self.train_inputs[start:start + 1000] for start in range(0, len(self.train_labels), 1000))
        scores = [layer.numpy() for layer in mean_abs_activation(model.forward_in_chunks, batches)]
        state = {name: value.clone() for name, value in model.state_dict().items()}
        return TrainedNetwork(state, val["accuracy"], val["cross_entropy"], test["accuracy"], scores, epochs)


class DropNetEnv(PruningEnv):
    """DropNet: each step drops a fraction of a network's remaining nodes/filters, rewinds the
    survivors to their initial weights θ0 and retrains them with early stopping.

    ## Description
    An episode prunes one network (see :mod:`prune_gym.models.masked_net`: DropNet's FC40-FC40
    and Conv64-Conv32 on MNIST, Conv64-Conv64-Conv128-Conv128-Dense256 on CIFAR-10). Every unit
    (dense node or conv filter) of the hidden layers has a 0/1 mask. After every training, each
    unit is scored by DropNet's metric, its mean absolute post-activation over the training
    images (:func:`prune_gym.pruning.importance.mean_abs_activation`). An action chooses which
    units to drop; the env masks them, rewinds every weight to θ0 (lottery-ticket style, as
    DropNet does) and retrains on the training split with Adam, early-stopping on the validation
    cross-entropy (``max_epochs``, ``patience``). Masked units contribute exactly zero.

    ## Action Space
    ``action_mode="rule"`` (default): ``Discrete(7)``, one of DropNet's rules for this cycle's
    drop — ``0 min``, ``1 max``, ``2 random`` (rank all remaining units of all layers together and
    drop ``round(drop_fraction · remaining)``), ``3 min_layer``, ``4 max_layer``, ``5 random_layer``
    (drop ``round(drop_fraction · remaining)`` of each layer) — or ``6 stop``.
    ``action_mode="layer"``: ``Discrete(L + 1)`` for ``L`` hidden layers: action ``l < L`` drops
    ``round(drop_fraction · remaining)`` units of layer ``l`` with the lowest metric; ``L`` stops.
    No rule empties a layer: ``min_units`` stay. A drop that can remove nothing (``layer`` mode,
    a layer already at ``min_units``) changes nothing and costs no training; :meth:`action_masks`
    marks the actions that can remove something (and ``stop``).

    ## Observation Space
    ``Box(0, 10, (44,), float32)``: for each of up to 8 hidden layers (zeros past the last) the
    fraction of its units kept and the mean, std, min and max score of its kept units divided by
    the layer's mean score in the unpruned network; then validation accuracy and validation
    cross-entropy divided by the unpruned network's, the fraction of MACs kept and
    ``cycle / max_cycles``. Every entry is clipped to [0, 10].

    ## Rewards
    ``mac_weight · (MACs removed this step / MACs of the unpruned network) − ce_weight · (rise of
    the validation cross-entropy this step)`` (defaults 1 and 1): MACs are traded against
    cross-entropy in the same units per step, so the return is the MAC fraction removed minus the
    total rise in validation cross-entropy. ``stop`` and a drop that removes nothing earn 0.

    ## Starting State
    A network initialised from a seed drawn with ``self.np_random`` (its θ0) and trained to early
    stopping with every unit kept (cycle 0). The unpruned network trained from a seed is cached in
    the process, so resetting with the same seed again costs no training.

    ## Episode End
    Terminates (the task's end) after ``stop``, when the validation accuracy falls below ``kappa``
    times the unpruned network's (``info["kappa_violated"]``; ``kappa=0`` never ends an episode),
    or when no layer has more than ``min_units`` units. Truncates (the budget's end) after
    ``max_cycles`` steps.

    ## Info
    Every ``info`` (reset and step) carries the contract's accounting
    (:data:`~prune_gym.envs.base.ACCOUNTING_KEYS`): ``macs`` and ``macs_full`` (MACs per image),
    ``params`` and ``params_full`` (conv/linear weights and biases of the kept units),
    ``cross_entropy`` (mean validation cross-entropy, nats), ``val_accuracy``, ``test_accuracy``
    (test split, or the images of ``eval_data``) and ``cycle`` (drop steps taken); then
    ``val_accuracy_full`` (the unpruned network's), ``units_kept`` and ``units_full`` (per layer),
    ``units_kept_fraction`` (of all hidden units), ``kappa_violated``, ``epochs`` (epochs to the
    best checkpoint of this step's training) and, after a step, ``action_name``.

    ## Arguments
    - ``dataset``: ``"mnist"``, ``"cifar10"``, ``"cifar100"`` (or ``"synthetic"``, tests only).
    - ``network``: ``"fc40-fc40"``, ``"conv64-conv32"`` or ``"conv64x2-conv128x2-dense256"``.
    - ``action_mode``: ``"rule"`` or ``"layer"`` (see Action Space).
    - ``drop_fraction``: fraction p of the remaining units a drop removes (DropNet: 0.2).
    - ``kappa``: end when validation accuracy < κ × the unpruned network's (default 0.98).
    - ``mac_weight``, ``ce_weight``: see Rewards.
    - ``max_epochs``, ``patience``: early-stopping budget of every training (epochs; evaluations
      without a better validation cross-entropy). ``batch_size``, ``lr``: Adam training.
    - ``min_units``: units every layer keeps. ``max_cycles``: steps before truncation.
    - ``data_root``: ``.npz`` file or data directory (default ``$PRUNE_GYM_DATA`` or ``~/.cache/prune_gym``).
    - ``eval_data``: optional ``.npz`` with ``x_test``/``y_test`` whose images replace the test
      split for ``test_accuracy``.
    - ``val_fraction``: fraction of the training images held out for validation; ``train_subset``:
      train (and score units) on only this many of the remaining training images, a fixed seeded
      choice (``None``: all; a CPU budget for the full CIFAR-10 copy); ``device``:
      ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.

    ## Version History
    - v0: initial release. (0.2: ``info["val_loss"]`` is ``cross_entropy``, ``kept_fraction`` is
      ``units_kept_fraction``; ``info["action_mask"]`` gave way to :meth:`action_masks`; negative
      reward weights are refused.)
    """

    def __init__(self, **kwargs: Any):
        self.settings = make_settings(DropNetSettings, kwargs, "DropNet")
        layers = self.settings.num_layers
        self.action_space = spaces.Discrete(len(RULE_ACTIONS) if self.settings.action_mode == "rule" else layers + 1)
        self.observation_space = spaces.Box(0.0, OBS_CLIP, (OBS_SIZE,), np.float32)
        self._core = _DropNetCore(self.settings)
        self._keep: list[np.ndarray] | None = None

    # -- accessors ------------------------------------------------------------------------------

    @property
    def action_names(self) -> tuple[str, ...]:
        """What each action does: DropNet's rules and ``stop``, or ``drop_layer{l}`` and ``stop``."""
        if self.settings.action_mode == "rule":
            return RULE_ACTIONS
        return (*(f"drop_layer{layer}" for layer in range(self.settings.num_layers)), "stop")

    @property
    def keep_masks(self) -> list[np.ndarray]:
        """Copies of the current masks (one boolean array per hidden layer; True = kept); after the
        episode ends, the masks it ended with."""
        if self._keep is None:
            raise RuntimeError("call reset() first.")
        return [mask.copy() for mask in self._keep]

    @property
    def network(self) -> MaskedNet:
        """The current trained (masked) network; shared with the env, so copy it before changing it."""
        if self._keep is None:
            raise RuntimeError("call reset() first.")
        return self._core.model

    @property
    def dataset(self) -> ImageDataset:
        self._core.load()
        return self._core.dataset

    def meets_kappa(self, val_accuracy: float) -> bool:
        """DropNet's criterion: ``val_accuracy`` is at least κ times the unpruned network's."""
        if self._keep is None:
            raise RuntimeError("call reset() first.")
        return bool(val_accuracy >= self.settings.kappa * self._full.val_accuracy)

    def retrain_from_init(self, keep: list[np.ndarray]) -> dict[str, Any]:
        """Train the architecture ``keep`` from this episode's θ0 (DropNet's final step) and return
        the accounting of :meth:`step`'s ``info`` for it. Training is deterministic given θ0, the
        masks and the episode's seed, so an architecture this episode already trained is not
        trained again; its figures are the same. The env's own state is left unchanged."""
        if self._keep is None:
            raise RuntimeError("call reset() first.")
        keep = [np.asarray(mask, dtype=bool) for mask in keep]
        if [len(mask) for mask in keep] != [len(mask) for mask in self._keep]:
            raise ValueError(f"keep must hold one mask per layer with {[len(m) for m in self._keep]} units.")
        trained = self._train(keep)
        self._core.model.load_state_dict(self._trained.state)  # the env's own network stays current
        return {**self._accounting_of(keep, trained).as_info(), **self._family_info(keep, trained)}

    # -- the contract's hooks -----------------------------------------------------------------

    def _begin(self, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        self._init_seed = int(self.np_random.integers(2**31 - 1))
        self._theta0, self._full = self._core.initial(self._init_seed)
        self._keep = [np.ones(layer.units, dtype=bool) for layer in self._core.model.spec.layers]
        self._trained_by_architecture = {self._architecture_key(self._keep): self._full}
        self._trained = self._full
        self._core.model.load_state_dict(self._full.state)
        self._cycle = 0
        self._macs = self._core.macs_full
        return self._observation(), self._family_info(self._keep, self._trained)

    def _advance(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        name = self.action_names[action]
        self._cycle += 1  # every step is a cycle, stop included (the contract's ``cycle``)
        if name == "stop":
            return self._observation(), 0.0, True, False, {**self._family_info(self._keep, self._trained),
                                                            "action_name": name}
        new_keep = self._drop(action)
        reward = 0.0
        if any((old != new).any() for old, new in zip(self._keep, new_keep)):
            previous_loss, previous_macs = self._trained.val_cross_entropy, self._macs
            self._keep = new_keep
            self._trained = self._train(new_keep)
            self._macs = self._core.macs(new_keep)
            settings = self.settings
            reward = float(settings.mac_weight * (previous_macs - self._macs) / self._core.macs_full
                           - settings.ce_weight * (self._trained.val_cross_entropy - previous_loss))
        info = {**self._family_info(self._keep, self._trained), "action_name": name}
        terminated = bool(info["kappa_violated"] or not any(can_drop(self._keep, self.settings.min_units)))
        truncated = bool(not terminated and self._cycle >= self.settings.max_cycles)
        return self._observation(), reward, terminated, truncated, info

    def accounting(self) -> Accounting:
        if self._keep is None:
            raise RuntimeError("call reset() first.")
        return self._accounting_of(self._keep, self._trained)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _architecture_key(keep: list[np.ndarray]) -> bytes:
        return b"".join(np.packbits(mask).tobytes() + b"|" for mask in keep)

    def _train(self, keep: list[np.ndarray]) -> TrainedNetwork:
        key = self._architecture_key(keep)
        if key not in self._trained_by_architecture:
            self._trained_by_architecture[key] = self._core.train_from(self._theta0, keep, self._init_seed)
        return self._trained_by_architecture[key]

    def _drop(self, action: int) -> list[np.ndarray]:
        settings, scores = self.settings, self._trained.scores
        if settings.action_mode == "rule":
            return select_drop(RULE_ACTIONS[action], scores, self._keep, settings.drop_fraction, self.np_random,
                               settings.min_units)
        keep = [mask.copy() for mask in self._keep]
        keep[action] = drop_in_layer("min", scores[action], keep[action], settings.drop_fraction, self.np_random,
                                     settings.min_units)
        return keep

    def action_masks(self) -> np.ndarray:
        """Actions that can remove a unit now, and ``stop`` (bool, one per action)."""
        if self._keep is None:
            return np.ones(self.action_space.n, dtype=bool)
        droppable = can_drop(self._keep, self.settings.min_units)
        if self.settings.action_mode == "rule":
            return np.array([any(droppable)] * len(DROP_RULES) + [True], dtype=bool)
        return np.array([*droppable, True], dtype=bool)

    def _accounting_of(self, keep: list[np.ndarray], trained: TrainedNetwork) -> Accounting:
        core = self._core
        return Accounting(macs=core.macs(keep), macs_full=core.macs_full, params=core.params(keep),
                          params_full=core.params_full, cycle=self._cycle, cross_entropy=trained.val_cross_entropy,
                          val_accuracy=trained.val_accuracy, test_accuracy=trained.test_accuracy)

    def _family_info(self, keep: list[np.ndarray], trained: TrainedNetwork) -> dict[str, Any]:
        units_kept = [int(mask.sum()) for mask in keep]
        units_full = [len(mask) for mask in keep]
        return {"val_accuracy_full": self._full.val_accuracy, "units_kept": units_kept, "units_full": units_full,
                "units_kept_fraction": sum(units_kept) / sum(units_full),
                "kappa_violated": not self.meets_kappa(trained.val_accuracy), "epochs": trained.epochs}

    def _observation(self) -> np.ndarray:
        figures = self.accounting()
        observation = np.zeros(OBS_SIZE, dtype=np.float64)
        full_scores = self._full.scores
        for layer, (mask, scores) in enumerate(zip(self._keep, self._trained.scores)):
            kept = scores[mask]
            scale = max(float(full_scores[layer].mean()), 1e-12)
            start = layer * LAYER_FEATURES
            observation[start] = mask.mean()
            observation[start + 1:start + LAYER_FEATURES] = np.array(
                [kept.mean(), kept.std(), kept.min(), kept.max()]) / scale
        full = self._full
        observation[-GLOBAL_FEATURES:] = [
            figures.val_accuracy / max(full.val_accuracy, 1e-12),
            figures.cross_entropy / max(full.val_cross_entropy, 1e-12),
            figures.macs / figures.macs_full,
            self._cycle / self.settings.max_cycles,
        ]
        return np.clip(observation, 0.0, OBS_CLIP).astype(np.float32)
