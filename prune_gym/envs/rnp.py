"""Runtime Neural Pruning (Lin et al., NeurIPS 2017) as a Gymnasium environment.

:class:`RNPEnv` is one image per episode; :class:`RNPVectorEnv` steps many images in lockstep
through the same batched core (:class:`_RNPCore`), so the two agree by construction and the
vector env runs at most ``k`` sliced convolutions per layer step for the whole batch.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from prune_gym.data import DATASETS, SPLITS, ImageDataset, normalize
from prune_gym.envs.base import (
    ACCOUNTING_KEYS,
    Accounting,
    PruningEnv,
    check_actions,
    check_choice,
    make_settings,
    set_integer,
    set_real,
)
from prune_gym.models.grouped_cnn import BackboneSpec, GroupedCNN, get_backbone_spec
from prune_gym.pretraining import PRECISIONS, BackboneRequest, PretrainBudget, pretrained_backbone
from prune_gym.pruning.runtime import DecisionFunction, RuntimePrunedNet, observation_size
from prune_gym.shipped import WEIGHTS_MODES
from prune_gym.training import augment_batch, evaluate_classifier, resolve_device, train_loop

REWARD_MODES = ("rnp", "macs")

# Defaults of the reward (see "Rewards" in RNPEnv's docstring for why these values).
DEFAULT_GROUP_PENALTY = -0.05
DEFAULT_CE_WEIGHT = 1.0
DEFAULT_MAC_WEIGHT = 1.0


@dataclass(frozen=True)
class RNPSettings:
    """The RNP family's arguments (see :class:`RNPEnv`'s Arguments), defaulted and validated in one
    place and read by the single and the vector environment alike."""

    dataset: str = "cifar10"
    backbone: str = "cnn4"
    k: int = 4
    dropout: float = 0.0
    split: str = "train"
    reward_mode: str = "rnp"
    group_penalty: float = DEFAULT_GROUP_PENALTY
    ce_weight: float = DEFAULT_CE_WEIGHT
    mac_weight: float = DEFAULT_MAC_WEIGHT
    data_root: str | None = None
    pretrain_steps: int = PretrainBudget.steps
    pretrain_lr: float = PretrainBudget.lr
    pretrain_batch_size: int = PretrainBudget.batch_size
    pretrain_precision: str = PretrainBudget.precision
    pretrain_cutout: int = PretrainBudget.cutout
    backbone_seed: int = 0
    val_fraction: float = 0.1
    device: str = "auto"
    weights: str = "auto"

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("weights", self.weights, WEIGHTS_MODES)
        spec = get_backbone_spec(self.backbone)
        check_choice("split", self.split, SPLITS)
        check_choice("reward_mode", self.reward_mode, REWARD_MODES)
        set_integer(self, "k", minimum=1)
        narrowest = min(spec.widths)
        if self.k > narrowest:
            raise ValueError(f"k={self.k} channel groups do not fit backbone {self.backbone!r}, whose narrowest layer "
                             f"has {narrowest} channels: choose k in 1..{narrowest}.")
        set_real(self, "dropout", lambda p: 0.0 <= p < 1.0, "a probability in [0, 1)")
        # A positive group penalty or a negative weight inverts the task (rewards computing more,
        # or a worse prediction): refused rather than silently optimised.
        set_real(self, "group_penalty", lambda p: p <= 0.0, "≤ 0 (the reward per extra channel group is a cost)")
        set_real(self, "ce_weight", lambda w: w >= 0.0, "≥ 0 (the weight of the cross-entropy cost)")
        set_real(self, "mac_weight", lambda w: w >= 0.0, "≥ 0 (the weight of the MAC cost)")
        set_integer(self, "pretrain_steps", minimum=1)
        set_real(self, "pretrain_lr", lambda lr: lr > 0.0, "a positive learning rate")
        set_integer(self, "pretrain_batch_size", minimum=1)
        check_choice("pretrain_precision", self.pretrain_precision, PRECISIONS)
        set_integer(self, "pretrain_cutout", minimum=0)
        set_integer(self, "backbone_seed", minimum=0)
        set_real(self, "val_fraction", lambda f: 0.0 < f < 1.0, "a fraction strictly between 0 and 1")

    @property
    def spec(self) -> BackboneSpec:
        return get_backbone_spec(self.backbone)

    def backbone_request(self) -> BackboneRequest:
        return BackboneRequest(self.dataset, self.backbone, self.k, self.dropout, self.backbone_seed,
                               self.val_fraction, PretrainBudget(steps=self.pretrain_steps, lr=self.pretrain_lr,
                                                                  batch_size=self.pretrain_batch_size,
                                                                  cutout=self.pretrain_cutout,
                                                                  precision=self.pretrain_precision))


def observation_space_for(settings: RNPSettings) -> spaces.Box:
    """The Box of :class:`RuntimePrunedNet`'s observation, known before any weights load."""
    # Pooled post-ReLU activations and the MAC fraction are ≥ 0; the one-hot is 0/1.
    return spaces.Box(low=0.0, high=np.inf, shape=(observation_size(settings.spec),), dtype=np.float32)


def step_rewards(settings: RNPSettings, actions: np.ndarray, step_macs: np.ndarray, macs_full: int) -> np.ndarray:
    """Reward of a step per image: ``a·p`` (``rnp``) or ``−λ·MACs_step/MACs_full`` (``macs``).

    Linear in ``actions`` and ``step_macs``, so summed over steps it equals this function of their
    sums (what ``prune-gym pretrain`` uses to report the return of a whole episode)."""
    if settings.reward_mode == "rnp":
        return actions * settings.group_penalty + 0.0  # + 0.0 turns -0.0 into 0.0
    return -settings.mac_weight * step_macs / macs_full


def final_rewards(settings: RNPSettings, cross_entropy: np.ndarray) -> np.ndarray:
    """What the last step adds per image: ``−α·CE`` (``rnp``) or ``−CE`` (``macs``)."""
    return -(settings.ce_weight if settings.reward_mode == "rnp" else 1.0) * cross_entropy


# Shared, read-only runtimes: many envs of one process (e.g. 256 in a SyncVectorEnv) reuse one
# folded copy of the pretrained weights instead of folding their own.
_SHARED_RUNTIMES: weakref.WeakKeyDictionary[GroupedCNN, RuntimePrunedNet] = weakref.WeakKeyDictionary()


@dataclass
class _EpisodeBatch:
    """State of a batch of episodes advancing in lockstep (bookkeeping in numpy, activations in torch)."""

    image_indices: np.ndarray
    labels: torch.Tensor
    activations: torch.Tensor
    widths: np.ndarray
    macs: np.ndarray
    params: np.ndarray
    decision: int = 0


class _RNPCore:
    """Lazily loaded backbone, data and runtime, and the batched episode mechanics."""

    def __init__(self, settings: RNPSettings):
        self.settings = settings
        self.ready = False

    def load(self) -> None:
        if self.ready:
            return
        settings = self.settings
        self.device = resolve_device(settings.device)
        backbone, self.pretrain_metrics, self.dataset = pretrained_backbone(
            settings.backbone_request(), settings.data_root, settings.device, settings.weights)
        self.backbone = backbone
        if backbone not in _SHARED_RUNTIMES:
            _SHARED_RUNTIMES[backbone] = RuntimePrunedNet(backbone, self.dataset.image_shape)
        self.runtime = _SHARED_RUNTIMES[backbone]
        self.owns_backbone = False
        images, labels = self.dataset.split(settings.split, settings.val_fraction)
        self.images, self.labels = images.to(self.device), labels.to(self.device)
        self.params_full = sum(cost.params() for cost in self.runtime.costs)
        self.ready = True

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def begin(self, image_indices: np.ndarray) -> _EpisodeBatch:
        rows = torch.from_numpy(image_indices).to(self.device)
        activations, widths, macs = self.runtime.stem(normalize(self.images[rows], self.dataset))
        params = np.full_like(macs, self.runtime.costs[0].params())
        return _EpisodeBatch(image_indices, self.labels[rows], activations, widths, macs, params)

    def accounting(self, batch: _EpisodeBatch) -> dict[str, np.ndarray]:
        """Per image, the contract's figures so far (:data:`~prune_gym.envs.base.ACCOUNTING_KEYS`
        without those an unfinished episode does not define)."""
        count = len(batch.image_indices)
        return {"macs": batch.macs, "macs_full": np.full(count, self.runtime.macs_full, dtype=np.int64),
                "params": batch.params, "params_full": np.full(count, self.params_full, dtype=np.int64),
                "cycle": np.full(count, batch.decision, dtype=np.int64)}

    def observe(self, batch: _EpisodeBatch) -> np.ndarray:
        decision = batch.decision if batch.decision < self.runtime.num_decisions else None
        return self.runtime.observation(batch.activations, decision, batch.macs)

    @torch.inference_mode()
    def advance(self, batch: _EpisodeBatch, actions: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """Apply ``actions`` (int64, 0..k-1) at the current decided layer; returns rewards and,
        after the last decision, the per-image outcome (the episode-end ``info``)."""
        settings, runtime = self.settings, self.runtime
        layer = batch.decision + 1
        previous_widths = batch.widths
        batch.activations, batch.widths, layer_macs = runtime.layer(layer, batch.activations, batch.widths, actions + 1)
        batch.params = batch.params + runtime.costs[layer].params(previous_widths, batch.widths)
        batch.decision += 1
        last = batch.decision == runtime.num_decisions
        if last:
            logits, head_macs = runtime.head(batch.activations, batch.widths)
            layer_macs = layer_macs + head_macs
            batch.params = batch.params + runtime.costs[-1].params(batch.widths)
        batch.macs = batch.macs + layer_macs
        rewards = step_rewards(settings, actions, layer_macs, runtime.macs_full)
        if not last:
            return rewards, None
        cross_entropy = F.cross_entropy(logits.float(), batch.labels, reduction="none").double().cpu().numpy()
        rewards = rewards + final_rewards(settings, cross_entropy)
        outcome = {
            **self.accounting(batch),
            "cross_entropy": cross_entropy,
            "correct": (logits.argmax(1) == batch.labels).cpu().numpy(),
            "label": batch.labels.cpu().numpy(),
            "image_index": batch.image_indices,
        }
        return rewards, outcome

    def own_backbone(self) -> GroupedCNN:
        """Copy-on-write: the first fine-tune gives this env private weights and runtime."""
        if not self.owns_backbone:
            self.backbone = copy.deepcopy(self.backbone)
            self.runtime = RuntimePrunedNet(self.backbone, self.dataset.image_shape)
            self.owns_backbone = True
        return self.backbone

    def finetune(self, decide: DecisionFunction, steps: int, batch_size: int, lr: float, seed: int) -> dict[str, float]:
        """Fine-tune the backbone for ``steps`` Adam steps on the training split under ``decide``."""
        self.load()
        backbone = self.own_backbone()
        settings, runtime = self.settings, self.runtime
        x_train, y_train = self.dataset.split("train", settings.val_fraction)
        x_val, y_val = self.dataset.split("val", settings.val_fraction)
        generator = torch.Generator().manual_seed(seed)
        flip = self.dataset.name.startswith("cifar")  # as in pretraining: mirrored digits are other digits
        optimizer = torch.optim.Adam(backbone.parameters(), lr=lr)

        def train_step(step: int) -> float:
            # Per-sample widths differ inside a batch, so batch statistics would mix widths: BN
            # layers keep their pretrained running statistics (eval mode); dropout stays active.
            for norms in backbone.norms:
                norms.eval()
            rows = torch.randint(len(y_train), (batch_size,), generator=generator)
            # The same augmentation as pretraining: without it a few thousand images overfit within
            # a few hundred Adam steps.
            images = normalize(augment_batch(x_train[rows], generator, flip).to(self.device), self.dataset)
            _, _, chosen = runtime(images, decide)
            loss = F.cross_entropy(backbone(images, chosen), y_train[rows].to(self.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            runtime.refresh()
            return loss.item()

        def evaluate() -> dict[str, float]:
            scores = evaluate_classifier(lambda x: runtime(x, decide)[0], x_val, y_val, self.dataset, self.device)
            return {"score": scores["accuracy"], "val_accuracy": scores["accuracy"],
                    "val_cross_entropy": scores["cross_entropy"]}

        result = train_loop(backbone, train_step, evaluate, steps, eval_every=steps, description="fine-tune backbone")
        runtime.refresh()
        return {**result.history[-1], "wall_s": result.wall_s}


class _RNPAccess:
    """What both RNP envs expose besides the Gymnasium API (loads the backbone on first use)."""

    _core: _RNPCore

    @property
    def runtime(self) -> RuntimePrunedNet:
        """The runtime-pruned network the env steps through."""
        self._core.load()
        return self._core.runtime

    @property
    def dataset(self) -> ImageDataset:
        self._core.load()
        return self._core.dataset

    @property
    def pretrain_metrics(self) -> dict[str, Any]:
        """Validation figures of the backbone's pretraining (stored with its cached weights)."""
        self._core.load()
        return self._core.pretrain_metrics

    def split_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and int64 labels of this env's split, on its device."""
        self._core.load()
        return self._core.images, self._core.labels

    def finetune_backbone(
        self, decide: DecisionFunction, steps: int, batch_size: int = 128, lr: float = 1e-4, seed: int = 0
    ) -> dict[str, float]:
        """Fine-tune this env's backbone for ``steps`` Adam steps under the decision function
        ``decide`` (observations → actions), as RNP alternates backbone and decision-network
        training. Uses the training split; returns validation accuracy and cross-entropy under
        ``decide``. Other envs sharing the pretrained weights are unaffected (copy on write)."""
        return self._core.finetune(decide, steps, batch_size, lr, seed)

    def backbone_state_dict(self) -> dict[str, torch.Tensor] | None:
        """This env's fine-tuned backbone weights, or ``None`` while it still shares the pretrained ones
        (what an agent's checkpoint stores so that a resumed run continues from the same backbone)."""
        self._core.load()
        return copy.deepcopy(self._core.backbone.state_dict()) if self._core.owns_backbone else None

    def load_backbone_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        """Restore weights saved by :meth:`backbone_state_dict` (``None`` keeps the pretrained ones)."""
        self._core.load()
        if state is None:
            return
        self._core.own_backbone().load_state_dict(state)
        self._core.runtime.refresh()


class RNPEnv(_RNPAccess, PruningEnv):
    """Runtime Neural Pruning: per image, per conv layer, keep the first ``a+1`` of ``k`` channel groups.

    ## Description
    One episode classifies one image. The image passes a pretrained plain CNN (see
    :mod:`prune_gym.models.grouped_cnn`) layer by layer: the first conv runs in full; before every
    later conv layer the agent sees the pooled features so far and chooses how many of that layer's
    ``k`` channel groups to compute. Skipped channels are zeros and cost nothing. After the last
    decision the classifier runs and the episode ends with the cross-entropy of its prediction.

    ## Action Space
    ``Discrete(k)``: action ``a`` computes the first ``a + 1`` of ``k`` equal channel groups of the
    next conv layer (``a = k-1`` is the full layer).

    ## Observation Space
    ``Box(0, inf, (W + D + 1,), float32)``, ``W`` the widest layer, ``D`` the number of decided layers:

    - ``[0, W)``: global average pool of the previous layer's output (zero-padded to ``W``);
    - ``[W, W + D)``: one-hot of the layer about to be decided (all zeros in the final observation);
    - ``[W + D]``: fraction (0–1) of the full network's MACs used so far.

    ## Rewards
    ``reward_mode="rnp"`` (the paper's): ``a · p`` at every step, and additionally ``−α · CE`` at
    the last, with ``p = group_penalty`` (negative) and ``α = ce_weight``. Defaults ``p = −0.05``,
    ``α = 1``: in the README's sweep on the CIFAR-10 subset it is the penalty at which the custom
    DQN (with its default hyperparameters) spends ≥ 3× fewer MACs than the full backbone (5.0×);
    at ``p = −0.03`` it kept 2.6×. With ``p = −0.05`` the narrowest static width earns the best
    mean return of the four, so a policy gains only by spending groups where they pay off.
    ``reward_mode="macs"``: ``−λ · (MACs of this step / MACs of the full network)`` at every step
    (``λ = mac_weight``) and additionally ``−CE`` at the last.

    ## Starting State
    An image drawn uniformly from the chosen split with ``self.np_random`` (or ``options={"image_index": i}``),
    after the full-width first conv layer.

    ## Episode End
    Terminates after the decision for the last conv layer (``D`` steps: the task's end); never
    truncates (there is no budget).

    ## Info
    Every ``info`` (reset and step) carries the contract's accounting
    (:data:`~prune_gym.envs.base.ACCOUNTING_KEYS`): ``macs`` and ``params`` used so far by this
    image (MACs per image; conv/linear weights and biases it touched), ``macs_full`` and
    ``params_full`` of the full network, ``cycle`` (decisions taken); ``cross_entropy`` (nats) is
    set at the last step and ``None`` before; ``val_accuracy`` and ``test_accuracy`` are ``None``
    (one image has no accuracy). The last step adds ``correct`` (bool), ``label`` and
    ``image_index``. :meth:`action_masks` is all true (every group count is always valid).

    ## Arguments
    - ``dataset``: ``"cifar10"``, ``"cifar100"``, ``"mnist"`` or ``"synthetic"`` (tests only).
    - ``backbone``: ``"cnn4"``, ``"cnn6"`` or ``"cnn8"``, optionally with a width factor in (0, 4]
      (``"cnn4-w1.3"``: every layer 1.3× wider, 25.1 M MACs; pretrained on first use, as any
      non-default kwarg); ``dropout``: after every layer (0 = none).
    - ``k``: channel groups per layer (≤ the narrowest layer's channels).
    - ``split``: ``"train"``, ``"val"`` (a fixed 10 % of the training images) or ``"test"``.
    - ``reward_mode``, ``group_penalty``, ``ce_weight``, ``mac_weight``: see Rewards.
    - ``data_root``: ``.npz`` file or data directory (default ``$PRUNE_GYM_DATA`` or ``~/.cache/prune_gym``).
    - ``pretrain_steps``, ``pretrain_lr`` (peak learning rate of the full-width phase; the
      sandwich phase peaks at a quarter of it), ``pretrain_batch_size`` (images per step,
      512), ``pretrain_precision`` (``"fp32"``, or ``"bf16"`` autocast: about 2× faster on CPUs
      with AVX-512 BF16, several times slower without), ``pretrain_cutout``
      (Cutout square's side in pixels, 0 = off), ``backbone_seed``: pretraining budget and
      seed of the backbone (part of its cache key); ``device``: ``"auto"`` (CUDA when present),
      ``"cpu"`` or ``"cuda"``.
    - ``weights``: where the pretrained backbone comes from. ``"auto"`` (default): the weights
      shipped with the package when dataset, backbone, ``k``, ``dropout``, ``backbone_seed``,
      ``pretrain_steps``, ``pretrain_lr``, ``pretrain_batch_size``, ``pretrain_precision``,
      ``pretrain_cutout`` and
      ``val_fraction`` are a shipped configuration (the id's registered values; ``prune-gym
      ship-weights --list``; they serve any copy of the dataset, loaded in seconds), else the
      weights cache, training on a miss. ``"train"``: never the shipped weights — train on (or
      load from the cache for) your own copy at ``data_root``; use it when your copy's validation
      split must be unseen by the backbone (a shipped backbone was trained on its own copy's
      training images, which may include images of your validation split). ``"shipped"``: insist
      on shipped weights (an error when none match). A damaged shipped file, or data whose image
      shape or class count does not fit it, is an error (``ShippedWeightsError``), never a retrain.

    ## Version History
    - v0: initial release. (0.2: every ``info`` carries the accounting, the reset's included; the
      arguments are :class:`RNPSettings`, which refuses a positive ``group_penalty`` and negative
      weights; ``weights``: default backbones load the weights shipped with the package instead of
      training on the local copy — the same request, trained by ``prune-gym ship-weights``.)
      (0.3: the backbone's default pretraining is the one-cycle recipe of
      :class:`~prune_gym.pretraining.PretrainBudget`, 1,200 steps of 512 images; same observation,
      actions and costs, a stronger backbone.) (0.4: ``RNP-CIFAR10-CNN6-v0`` and ``-CNN8-v0``
      register ``pretrain_steps=2400, pretrain_precision="bf16"``, the request of their shipped
      weights; the other ids are unchanged.)
    """

    def __init__(self, **kwargs: Any):
        self.settings = make_settings(RNPSettings, kwargs, "RNP")
        self.action_space = spaces.Discrete(self.settings.k)
        self.observation_space = observation_space_for(self.settings)
        self._core = _RNPCore(self.settings)
        self._episode: _EpisodeBatch | None = None
        self._outcome: dict[str, Any] = {}

    @property
    def action_names(self) -> tuple[str, ...]:
        k = self.settings.k
        return tuple(f"compute {groups} of {k} channel groups" for groups in range(1, k + 1))

    def _begin(self, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        self._core.load()
        index = options.get("image_index")
        if index is None:
            index = int(self.np_random.integers(self._core.num_images))
        elif not 0 <= int(index) < self._core.num_images:
            raise ValueError(f"image_index {index} is outside the {self._core.num_images} images of this split.")
        self._episode = self._core.begin(np.array([int(index)], dtype=np.int64))
        self._outcome = {}
        return self._core.observe(self._episode)[0], {}

    def _advance(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self._episode is not None
        rewards, outcome = self._core.advance(self._episode, np.array([action], dtype=np.int64))
        observation = self._core.observe(self._episode)[0]
        if outcome is None:
            return observation, float(rewards[0]), False, False, {}
        self._outcome = {key: value[0].item() for key, value in outcome.items()}
        extra = {key: value for key, value in self._outcome.items() if key not in ACCOUNTING_KEYS}
        return observation, float(rewards[0]), True, False, extra

    def accounting(self) -> Accounting:
        assert self._episode is not None, "call reset() first"
        figures = {key: int(value[0]) for key, value in self._core.accounting(self._episode).items()}
        return Accounting(**figures, cross_entropy=self._outcome.get("cross_entropy"))


class RNPVectorEnv(_RNPAccess, VectorEnv):
    """``num_envs`` RNP episodes in lockstep, computed as one batch (the ``vector_entry_point``).

    Sub-environment ``i`` reset with ``seed`` draws the same images as ``RNPEnv`` reset with
    ``seed + i``, so results match the single env on the same seeds and actions. All episodes have
    the same length, so they end together and are reset in the same step
    (``AutoresetMode.SAME_STEP``: the terminal observation and info are in ``info["final_obs"]``
    and ``info["final_info"]``, as in Gymnasium's own vector envs). Accepts :class:`RNPEnv`'s arguments.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 256, **kwargs: Any):
        if num_envs < 1:
            raise ValueError(f"num_envs must be ≥ 1, got {num_envs}.")
        self.settings = make_settings(RNPSettings, kwargs, "RNP")
        self.num_envs = num_envs
        self.single_action_space = spaces.Discrete(self.settings.k)
        self.single_observation_space = observation_space_for(self.settings)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._core = _RNPCore(self.settings)
        self._generators: list[np.random.Generator] | None = None
        self._episode: _EpisodeBatch | None = None

    def _draw_images(self) -> np.ndarray:
        assert self._generators is not None
        count = self._core.num_images
        return np.array([rng.integers(count) for rng in self._generators], dtype=np.int64)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        self._core.load()
        if isinstance(seed, int):
            seed = [seed + i for i in range(self.num_envs)]
        if seed is not None:
            if len(seed) != self.num_envs:
                raise ValueError(f"Expected {self.num_envs} seeds, got {len(seed)}.")
            self._generators = [seeding.np_random(s)[0] for s in seed]
        elif self._generators is None:
            self._generators = [seeding.np_random()[0] for _ in range(self.num_envs)]
        self._episode = self._core.begin(self._draw_images())
        return self._core.observe(self._episode), self._infos(self._core.accounting(self._episode))

    def step(self, actions):
        if self._episode is None:
            raise RuntimeError("call reset() before step().")
        actions = check_actions(actions, self.single_action_space, self.num_envs)
        episode = self._episode
        rewards, outcome = self._core.advance(episode, actions)
        obs = self._core.observe(episode)
        every = np.ones(self.num_envs, dtype=bool)
        if outcome is None:
            return (obs, rewards, np.zeros(self.num_envs, bool), np.zeros(self.num_envs, bool),
                    self._infos(self._core.accounting(episode)))
        final_obs = np.empty(self.num_envs, dtype=object)
        final_obs[:] = list(obs)
        # The new episodes' reset accounting, with the finished ones' figures under final_info.
        self._episode = self._core.begin(self._draw_images())
        infos = {**self._infos(self._core.accounting(self._episode)), "final_obs": final_obs, "_final_obs": every,
                 "final_info": self._infos(outcome), "_final_info": every}
        return self._core.observe(self._episode), rewards, every.copy(), np.zeros(self.num_envs, bool), infos

    def _infos(self, figures: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Gymnasium's vector-info layout: each key's array and a ``_key`` mask of the sub-envs that
        have it (every one here; an accounting key not yet defined is absent)."""
        every = np.ones(self.num_envs, dtype=bool)
        return {**figures, **{f"_{key}": every for key in figures}}

    def action_masks(self) -> np.ndarray:
        """Valid actions per sub-env (bool, ``num_envs × k``): every group count, always."""
        return np.ones((self.num_envs, self.settings.k), dtype=bool)
