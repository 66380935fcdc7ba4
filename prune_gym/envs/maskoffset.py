"""MaskOffset: learned continuous channel masks on a CIFAR ResNet; the agent steers their offset."""

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
from prune_gym.models.mask_offset import DEFAULT_OFFSET, DEFAULT_TIE_FRACTION, MaskedResNet
from prune_gym.models.resnet_cifar import RESNET_DEPTHS, check_resnet_name, conv_bn_pairs
from prune_gym.pretraining import PRECISIONS, BackboneRequest, PretrainBudget, pretrained_backbone
from prune_gym.pruning.importance import FILTER_CRITERIA, filter_scores
from prune_gym.pruning.resnet_pruning import extract_resnet, masks_for_macs
from prune_gym.shipped import WEIGHTS_MODES
from prune_gym.training import resolve_device

ACTION_MODES = ("continuous", "discrete")
LOWER, HOLD, RAISE = range(3)
DISCRETE_ACTION_NAMES = ("lower", "hold", "raise")
# Observation: per convolution (padded to the deepest supported network) the fraction of channels
# kept, then these scalars.
MAX_LAYERS = 1 + 2 * 3 * max((depth - 2) // 6 for depth in RESNET_DEPTHS.values())
OBSERVATION_SCALARS = ("params_fraction", "macs_fraction", "val_cross_entropy", "val_accuracy", "progress",
                       "interacting_fraction")
# The thesis's budget (ResNet-110 there: 4,000 pruning iterations of batch 128, SGD, weight decay
# 1e-4, lr 1e-3), then a long fine-tune; for a GPU. gym.make("MaskOffset-CIFAR10-v0", **THESIS_BUDGET).
THESIS_BUDGET = {"max_iter": 4000, "iterations_per_step": 200, "batch_size": 128, "lr": 1e-3,
                 "weight_decay": 1e-4, "finetune_iterations": 14000, "finetune_lr": 1e-2, "val_images": 2000}


@dataclass(frozen=True)
class MaskOffsetSettings:
    """The MaskOffset family's arguments (see :class:`MaskOffsetEnv`'s Arguments), defaulted and
    validated in one place."""

    network: str = "resnet20"
    dataset: str = "cifar10"
    action_mode: str = "continuous"
    interacting_step: float = 0.1
    max_iter: int = 160
    iterations_per_step: int = 16
    batch_size: int = 64
    lr: float = 0.01
    weight_decay: float = 1e-4
    offset: float = DEFAULT_OFFSET
    tie_fraction: float = DEFAULT_TIE_FRACTION
    finetune_iterations: int = 160
    finetune_lr: float = 0.01
    round_to: int = 1
    val_images: int = 500
    train_subset: int | None = None
    augment: bool = True
    flops_weight: float = 1.0
    target_flops: float | None = None
    target_weight: float = 10.0
    pretrain_steps: int = 4400
    pretrain_lr: float = 0.4
    pretrain_batch_size: int = 512
    pretrain_precision: str = "fp32"
    pretrain_cutout: int = 0
    backbone_seed: int = 0
    val_fraction: float = 0.1
    data_root: str | None = None
    eval_data: str | None = None
    device: str = "auto"
    weights: str = "auto"

    def __post_init__(self) -> None:
        check_resnet_name(self.network)
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("action_mode", self.action_mode, ACTION_MODES)
        check_choice("weights", self.weights, WEIGHTS_MODES)
        check_choice("pretrain_precision", self.pretrain_precision, PRECISIONS)
        for name in ("max_iter", "iterations_per_step", "batch_size", "finetune_iterations", "val_images",
                     "pretrain_steps", "pretrain_batch_size", "round_to"):
            set_integer(self, name, minimum=1)
        set_integer(self, "train_subset", minimum=1, optional=True)
        set_integer(self, "backbone_seed", minimum=0)
        set_integer(self, "pretrain_cutout", minimum=0)
        set_real(self, "interacting_step", lambda s: s > 0.0, "> 0 (a fraction of max_iter per unit of action)")
        for name in ("lr", "finetune_lr", "pretrain_lr"):
            set_real(self, name, lambda lr: lr > 0.0, "a positive learning rate")
        set_real(self, "weight_decay", lambda w: w >= 0.0, "≥ 0")
        set_real(self, "offset", lambda o: o > 0.0, "> 0 (the thesis's 1.15)")
        set_real(self, "tie_fraction", lambda f: 0.0 <= f < 1.0, "in [0, 1) (the thesis's 0.7)")
        set_real(self, "flops_weight", lambda w: w >= 0.0, "≥ 0 (the weight of the FLOPs removed)")
        set_real(self, "target_weight", lambda w: w >= 0.0, "≥ 0 (the weight of the final distance to target_flops)")
        set_real(self, "val_fraction", lambda f: 0.0 < f < 1.0, "a fraction strictly between 0 and 1")
        if self.target_flops is not None:
            set_real(self, "target_flops", lambda f: 0.0 < f < 1.0,
                     "None or the fraction of the unpruned network's FLOPs to keep, strictly between 0 and 1 "
                     "(e.g. 0.5 for half)")

    def backbone_request(self) -> BackboneRequest:
        # One phase (full_width_fraction 0), batch 512, label smoothing 0.1, shifts of 4 pixels.
        budget = PretrainBudget(steps=self.pretrain_steps, full_width_fraction=0.0, batch_size=self.pretrain_batch_size,
                                lr=self.pretrain_lr, label_smoothing=0.1, translate=4, cutout=self.pretrain_cutout,
                                random_configs=0, precision=self.pretrain_precision)
        return BackboneRequest(self.dataset, self.network, k=1, seed=self.backbone_seed,
                               val_fraction=self.val_fraction, budget=budget)


class MaskOffsetEnv(PruningEnv):
    """MaskOffset: prune a CIFAR ResNet with learned continuous masks, steering their offset.

    ## Description
    One episode is one pruning run of a pretrained CIFAR ResNet (ResNet-20 or ResNet-56, He et
    al. 2016 with the zero-padding shortcut), after a thesis on structured pruning with learned
    pruning-models. Every convolution gets a pruning-model that reads its input and masks its
    output channels with the **continuous mask** of the thesis's eq. 4.3
    (:mod:`prune_gym.models.mask_offset`)::

        cm_t = ReLU(½·(cm_{t−1} + (BM(y) − M(y)) / sqrt(V(y))) + offset − (t + interacting) / max_iter)

    A zero is a pruned channel; channels tied by residual additions share one mask. Weights and
    pruning-models train together through the one cross-entropy loss (SGD, momentum 0.9). As
    ``t`` approaches ``max_iter`` the masks close; ``interacting`` — the thesis's *interactive
    pruning* — shifts that schedule: raising it prunes more and sooner, lowering it less. The
    agent sets ``interacting`` while the pruning runs. A step is ``iterations_per_step`` pruning
    iterations. After ``max_iter`` iterations the masks freeze, the network is extracted into a
    smaller dense network (:func:`~prune_gym.pruning.resnet_pruning.extract_resnet`: pruned
    convolutions and BatchNorms, no pruning-models) and fine-tuned for ``finetune_iterations``.

    ## Action Space
    ``action_mode="continuous"`` (default): ``Box(-1, 1, (1,), float32)``, the change of
    ``interacting`` this step in units of ``interacting_step · max_iter`` iterations (default 0.1:
    a full action moves the end of the schedule by a tenth of the phase). ``action_mode="discrete"``:
    ``Discrete(3)``, ``0`` lower, ``1`` hold, ``2`` raise ``interacting`` by that amount, with
    :meth:`action_masks` (lower/raise invalid at the bounds). ``interacting`` stays within
    ``±max_iter``. Anything outside the action space raises ``ValueError``.

    ## Observation Space
    ``Box((61,), float32)``: per convolution in forward order the fraction of its output channels
    kept (mask > 0), zero-padded to the 55 convolutions of ResNet-56; then the fractions of the
    parameters and of the FLOPs (MACs) kept, the validation cross-entropy (nats) and accuracy on a
    fixed subset of ``val_images`` validation images, the progress ``t / max_iter`` through the
    pruning phase and ``interacting / max_iter``.

    ## Rewards
    Per step ``flops_weight · ΔFLOPs removed / FLOPs_full − ΔCE``: the FLOPs (MACs) removed in this
    step as a fraction of the unpruned network's, minus the rise of the validation cross-entropy
    (the last step includes the fine-tune). The sum over an episode is ``flops_weight · (1 −
    FLOPs kept) − (CE_final − CE_pretrained)``. With ``target_flops`` (the fraction of FLOPs to keep,
    the thesis's use case), the last step also pays ``target_weight · |FLOPs kept − target_flops|``.

    ## Starting State
    The pretrained network with every mask at 1 (nothing pruned), ``interacting = 0``; the
    pruning-models initialised from ``self.np_random``.

    ## Episode End
    Terminates when the pruning phase is over (after ``max_iter / iterations_per_step`` steps,
    rounded up): the last step also freezes, extracts, fine-tunes and scores the network on the
    test split. There is no other budget, so no truncation.

    ## Info
    The contract's accounting (:data:`~prune_gym.envs.base.ACCOUNTING_KEYS`): ``macs``,
    ``params`` (of the network the masks define, counted on its extraction by
    :mod:`prune_gym.pruning.counting`; the pruning-models are training machinery, not counted),
    ``macs_full``, ``params_full``, ``cross_entropy`` and ``val_accuracy`` (the validation subset),
    ``cycle``, ``test_accuracy`` (at reset the pretrained network's, at the end the fine-tuned
    pruned network's; else ``None``); then ``interacting``, ``iteration`` and, at the end,
    ``test_accuracy_original``.

    ## Arguments
    - ``network``: ``"resnet20"`` (default) or ``"resnet56"``; ``dataset``: ``"cifar10"`` (also
      ``"cifar100"``, ``"synthetic"``).
    - ``action_mode``, ``interacting_step``: see Action Space.
    - ``max_iter`` (160), ``iterations_per_step`` (16), ``batch_size`` (64), ``lr`` (0.01),
      ``weight_decay`` (1e-4): the pruning phase; ``offset`` (1.15), ``tie_fraction`` (0.7): eq. 4.3
      and the residual ties.
    - ``finetune_iterations`` (160), ``finetune_lr`` (0.01): fine-tuning of the extracted network
      (SGD, momentum 0.9, cosine decay). These cheap defaults keep an episode of ResNet-20 within
      minutes on 2 CPU cores. :data:`THESIS_BUDGET` holds the thesis's budget (4,000 iterations of
      batch 128, lr 1e-3, a long fine-tune) for a GPU.
    - ``round_to`` (1): the extracted network keeps each channel count rounded to the nearest
      multiple of ``round_to`` (:func:`~prune_gym.pruning.resnet_pruning.kept_per_convolution`),
      and the static criteria prune to such counts: 8 gives counts that oneDNN's CPU kernels run
      fast, so the FLOP cut shows as speed. Every MAC and parameter figure (per step and final)
      counts the rounded network. 1 is the thesis's extraction.
    - ``val_images``: size of the fixed validation subset scored every step; ``train_subset``;
      ``augment`` (flips and shifts).
    - ``flops_weight``, ``target_flops`` (None or a fraction 0–1 of FLOPs to keep),
      ``target_weight``: see Rewards.
    - ``pretrain_steps`` (4,400 steps of ``pretrain_batch_size`` 512, ~50 epochs), ``pretrain_lr``,
      ``pretrain_precision`` (``"fp32"``, or ``"bf16"`` autocast: about 2× faster on CPUs with
      AVX-512 BF16), ``pretrain_cutout`` (side of the Cutout square in pixels, 0 = off: see
      :class:`~prune_gym.pretraining.PretrainBudget`), ``backbone_seed``,
      ``val_fraction``, ``weights`` (``"auto"``/``"shipped"``/``"train"``, as for RNP): the
      pretrained network, through the project's weights cache and shipped weights.
    - ``data_root``, ``eval_data`` (``.npz`` replacing the test split), ``device``.

    ## Version History
    - v0: initial release.
    """

    def __init__(self, **kwargs: Any):
        self.settings = make_settings(MaskOffsetSettings, kwargs, "MaskOffset")
        settings = self.settings
        self.request = settings.backbone_request()
        self.device = resolve_device(settings.device)
        if settings.action_mode == "continuous":
            self.action_space = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        else:
            self.action_space = spaces.Discrete(len(DISCRETE_ACTION_NAMES))
        low = np.zeros(MAX_LAYERS + len(OBSERVATION_SCALARS), np.float32)
        high = np.ones_like(low)
        low[-1], high[-4] = -1.0, np.inf  # interacting / max_iter ∈ [−1, 1]; cross-entropy ≥ 0
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self._data: SplitData | None = None
        self.model: nn.Module | None = None

    @property
    def action_names(self) -> tuple[str, ...]:
        return DISCRETE_ACTION_NAMES

    def action_masks(self) -> np.ndarray:
        if not isinstance(self.action_space, spaces.Discrete):
            raise AttributeError("action_masks() exists for action_mode='discrete' only; this env's actions are a Box.")
        if self.model is None:
            return np.ones(3, dtype=bool)
        limit = self.settings.max_iter
        return np.array([self._interacting > -limit, True, self._interacting < limit], dtype=bool)

    # -- lazily loaded network, data and reference figures --------------------------------------

    def _load(self) -> None:
        if self._data is not None:
            return
        settings = self.settings
        network, self.pretrain_metrics, _ = pretrained_backbone(self.request, settings.data_root, settings.device,
                                                                settings.weights)
        self.original = network
        data = self._data = load_split_data(settings.dataset, settings.data_root, settings.val_fraction,
                                            settings.train_subset, settings.eval_data, self.device)
        # The fixed validation subset scored every step (the first val_images of the seeded split).
        self._val_images = data.val_images[:settings.val_images]
        self._val_labels = data.val_labels[:settings.val_images]
        self.costs_full = model_costs(network, data.dataset.image_shape)
        self._val_original = self._score(network)
        self._test_original = classifier_metrics(network, data.test_images, data.test_labels, data, self._prepare)

    @property
    def data(self) -> SplitData:
        self._load()
        assert self._data is not None
        return self._data

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        assert self._data is not None
        return normalize(images, self._data.dataset).contiguous(memory_format=torch.channels_last)

    def _score(self, model: nn.Module) -> dict[str, float]:
        return classifier_metrics(model, self._val_images, self._val_labels, self.data, self._prepare)

    def _batches_and_augment(self) -> tuple[EpochBatches, Any]:
        data = self.data
        generator = torch.Generator().manual_seed(torch_seed(self.np_random))
        batches = EpochBatches(data.train_images, data.train_labels, self.settings.batch_size, generator)
        return batches, augmenter(data.dataset, generator) if self.settings.augment else None

    def _train(self, model: nn.Module, optimizer: torch.optim.Optimizer, iterations: int, after_step=None,
               description: str = "MaskOffset step") -> dict[str, float]:
        def loss_and_logits(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = model(self._prepare(images))
            return F.cross_entropy(logits, labels), logits

        return train_iterations(model, optimizer, self._batches, loss_and_logits, iterations,
                                lambda: self._score(model), after_step=after_step, augment=self._augment,
                                description=description)

    def finetune(self, model: nn.Module) -> dict[str, float]:
        """Fine-tune a pruned network in place with the env's budget (``finetune_iterations`` SGD
        steps at ``finetune_lr``, cosine decay; the same for MaskOffset and the static criteria)."""
        settings = self.settings
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.finetune_lr, momentum=0.9, nesterov=True,
                                    weight_decay=settings.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.finetune_iterations)
        return self._train(model, optimizer, settings.finetune_iterations, after_step=schedule.step,
                           description="MaskOffset fine-tune")

    # -- the episode ------------------------------------------------------------------------------

    def _begin(self, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        settings = self.settings
        self._load()
        with torch.random.fork_rng():
            torch.manual_seed(torch_seed(self.np_random))
            network = copy.deepcopy(self.original)
            self.model = MaskedResNet(network, settings.max_iter, settings.offset, settings.tie_fraction).to(
                self.device, memory_format=torch.channels_last)
        for parameter in self.model.parameters():
            parameter.requires_grad_(True)
        self._batches, self._augment = self._batches_and_augment()
        self._optimizer = torch.optim.SGD(self.model.parameters(), lr=settings.lr, momentum=0.9,
                                          weight_decay=settings.weight_decay)
        self._interacting, self._cycle, self.pruned = 0.0, 0, None
        self._costs = dict(self.costs_full)
        self._last = dict(self._val_original)
        self._test: dict[str, float] | None = self._test_original  # nothing pruned yet: the pretrained figures
        return self._observation(), self._family_info()

    def _advance(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert isinstance(self.model, MaskedResNet)
        settings = self.settings
        self._test, self._cycle = None, self._cycle + 1
        change = float(np.asarray(action).reshape(-1)[0]) if settings.action_mode == "continuous" \
            else float(action - HOLD)
        limit = float(settings.max_iter)
        self._interacting = float(np.clip(self._interacting + change * settings.interacting_step * limit,
                                          -limit, limit))
        self.model.interacting = self._interacting
        before_macs, before_ce = self._costs["macs"], self._last["cross_entropy"]
        iterations = min(settings.iterations_per_step, settings.max_iter - self.model.iteration)
        self._last = self._train(self.model, self._optimizer, iterations)  # scored with the stored masks
        self._costs = self._masked_costs()
        info = self._family_info()
        done = self.model.iteration >= settings.max_iter
        if done:
            self.model.freeze()
            self.pruned = extract_resnet(self.model.network, self.model.applied_masks(), settings.round_to)
            self._last = self.finetune(self.pruned)
            self._costs = model_costs(self.pruned, self.data.dataset.image_shape)
            self._test = self.test_metrics(self.pruned)
            info = {**self._family_info(), "test_accuracy_original": self._test_original["accuracy"]}
        reward = settings.flops_weight * (before_macs - self._costs["macs"]) / self.costs_full["macs"] \
            - (self._last["cross_entropy"] - before_ce)
        if done and settings.target_flops is not None:
            kept = self._costs["macs"] / self.costs_full["macs"]
            reward -= settings.target_weight * abs(kept - settings.target_flops)
        return self._observation(), float(reward), done, False, info

    def _masked_costs(self) -> dict[str, int]:
        assert isinstance(self.model, MaskedResNet)
        return model_costs(extract_resnet(self.model.network, self.model.applied_masks(), self.settings.round_to),
                           self.data.dataset.image_shape)

    def test_metrics(self, model: nn.Module) -> dict[str, float]:
        """Accuracy and cross-entropy of ``model`` on the test split (or ``eval_data``)."""
        data = self.data
        return classifier_metrics(model, data.test_images, data.test_labels, data, self._prepare)

    # -- static criteria at the same FLOPs and fine-tuning budget ---------------------------------

    def prune_statically(self, criterion: str, target_macs: int, seed: int | None = None) -> dict[str, Any]:
        """Prune the pretrained network by a static ``criterion`` (one of :data:`FILTER_CRITERIA`)
        to at most ``target_macs`` MACs per image, fine-tune it with this env's budget and score it.

        Starts an episode (``reset(seed)``) for the seeded training order; returns the reset
        ``info`` and the final one (the contract's accounting of the pruned network).
        """
        _, start = self.reset(seed=seed)
        data = self.data
        network = copy.deepcopy(self.original).to(self.device)
        generator = torch.Generator().manual_seed(torch_seed(self.np_random))
        images, labels = self._batches.next()

        def forward_loss() -> torch.Tensor:
            network.eval()
            return F.cross_entropy(network(self._prepare(images)), labels)

        scores = filter_scores(criterion, conv_bn_pairs(network), forward_loss, generator)
        network.zero_grad(set_to_none=True)
        round_to = self.settings.round_to
        masks, _ = masks_for_macs(network, scores, target_macs, data.dataset.image_shape, round_to)
        pruned = extract_resnet(network, masks, round_to)
        return {"reset": start, "final": {**self._finetune_and_score(pruned), "criterion": criterion}}

    def finetune_unpruned(self, seed: int | None = None) -> dict[str, Any]:
        """The control of every pruned row: the pretrained network, **not** pruned, fine-tuned with
        this env's budget and scored. Why: the pretrained network is not trained to convergence
        (~50 epochs), so a long fine-tune can raise a pruned network's accuracy for reasons that
        have nothing to do with pruning; this row says how much the fine-tune alone gives.

        Starts an episode (``reset(seed)``) for the seeded training order, as
        :meth:`prune_statically` does; returns the reset ``info`` and the final one.
        """
        _, start = self.reset(seed=seed)
        network = copy.deepcopy(self.original).to(self.device)
        return {"reset": start, "final": {**self._finetune_and_score(network), "criterion": "none"}}

    def _finetune_and_score(self, network: nn.Module) -> dict[str, Any]:
        """Make ``network`` the episode's final network: fine-tune it with this env's budget, count
        and score it; the final ``info`` (the contract's accounting) with the pretrained accuracy."""
        data = self.data
        self.model = self.pruned = network.to(memory_format=torch.channels_last)
        self._last = self.finetune(self.pruned)
        self._costs = model_costs(self.pruned, data.dataset.image_shape)
        self._test = self.test_metrics(self.pruned)
        self._cycle, self._running = 1, False
        return {**self.accounting().as_info(), "test_accuracy_original": self._test_original["accuracy"]}

    # -- observation, info and accessors ----------------------------------------------------------

    def _observation(self) -> np.ndarray:
        kept = np.zeros(MAX_LAYERS, np.float32)
        if isinstance(self.model, MaskedResNet):
            fractions = [float((mask > 0).float().mean()) for mask in self.model.applied_masks()]
        else:
            assert self.pruned is not None
            full = [conv.out_channels for conv, _ in conv_bn_pairs(self.original)]
            fractions = [len(indices) / width for indices, width in zip(self.pruned.kept, full)]
        kept[:len(fractions)] = fractions
        scalars = [self._costs["params"] / self.costs_full["params"], self._costs["macs"] / self.costs_full["macs"],
                   self._last["cross_entropy"], self._last["accuracy"], self._iteration / self.settings.max_iter,
                   self._interacting / self.settings.max_iter]
        return np.concatenate([kept, np.array(scalars, np.float32)]).astype(np.float32)

    def accounting(self) -> Accounting:
        if self.model is None:
            raise RuntimeError("call reset() first.")
        return Accounting(macs=self._costs["macs"], macs_full=self.costs_full["macs"], params=self._costs["params"],
                          params_full=self.costs_full["params"], cycle=self._cycle,
                          cross_entropy=self._last["cross_entropy"], val_accuracy=self._last["accuracy"],
                          test_accuracy=None if self._test is None else self._test["accuracy"])

    @property
    def _iteration(self) -> int:
        """Pruning iterations done: the masked network's count, or the whole phase once extracted."""
        return self.model.iteration if isinstance(self.model, MaskedResNet) else self.settings.max_iter

    def _family_info(self) -> dict[str, Any]:
        return {"interacting": float(self._interacting), "iteration": int(self._iteration)}

    def pretrained_summary(self, split: str = "test") -> dict[str, Any]:
        """The pretrained network's figures on ``split`` (``"train"``, ``"val"`` or ``"test"``; the
        test split is ``eval_data``'s when given): accuracy, cross-entropy, MACs, parameters and
        its pretraining metrics (``prune-gym pretrain``)."""
        check_choice("split", split, ("train", "val", "test"))
        data = self.data
        images, labels = {"train": (data.train_images, data.train_labels), "val": (data.val_images, data.val_labels),
                          "test": (data.test_images, data.test_labels)}[split]
        scores = classifier_metrics(self.original, images, labels, data, self._prepare)
        return {"network": self.settings.network, "dataset": data.dataset.name, "source": str(data.dataset.source),
                "pretrain": self.pretrain_metrics, "split": split, "images": len(labels), **scores,
                **self.costs_full}

    def original_model(self) -> nn.Module:
        """A copy of the pretrained (unpruned) network."""
        self._load()
        return copy.deepcopy(self.original)

    def pruned_model(self) -> nn.Module:
        """A copy of the extracted, fine-tuned network of the finished episode."""
        if self.pruned is None:
            raise RuntimeError("No pruned network yet: play an episode to its end first.")
        return copy.deepcopy(self.pruned)


__all__ = ["FILTER_CRITERIA", "MaskOffsetEnv", "MaskOffsetSettings", "THESIS_BUDGET"]
