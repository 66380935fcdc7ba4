"""Runtime-pruned inference: compute only the channel groups a decision function selects, per image.

:class:`RuntimePrunedNet` is what a deployed RNP model runs and what the RNP environments step
through, so the latency a user measures and the MACs an agent is charged come from one code path.
For speed on CPUs it folds every BatchNorm into its conv (weights and bias per (input, output)
width pair, folded on first use and cached, so no weight is sliced at run time), keeps
activations channels_last, pools before the in-place ReLU (they commute; pooling first
touches 4× less memory), and runs a batch whose conv output would be large in row chunks
(:data:`CONV_CHUNK_BYTES`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from prune_gym.models.grouped_cnn import BackboneSpec, GroupedCNN, run_grouped
from prune_gym.models.pooling import max_pool_2x2_channels_last
from prune_gym.pruning.counting import LayerCost, trace_layer_costs

# decide(observations: float32 numpy N×obs_dim) -> actions in 0..k-1 (compute action+1 groups),
# the signature of an agent's batched policy, so a trained agent plugs in directly. A decision
# function states its own cost in a `decision_macs` attribute (see decision_macs below).
DecisionFunction = Callable[[np.ndarray], "np.ndarray | Sequence[int]"]


# Why batches are cut: glibc's malloc serves every block above its mmap threshold (which grows
# with use but never past 32 MiB on 64-bit Linux) with fresh pages from the kernel, faulted in and
# zeroed on every call. The cnn4/cnn6/cnn8 stem's conv output for 256 images is 33.5 MB: on this
# project's CPU (one thread, `python benchmarks/batched_kernels.py`) allocating and filling it
# took 14.6 ms, and the stem (conv, pool, ReLU) 21.8 ms in one call against 4.3 ms in chunks of 32
# images. A layer whose conv output (before pooling) would pass CONV_CHUNK_BYTES runs in row
# chunks below it; the convolutions' per-image arithmetic is unchanged, so are the outputs.
CONV_CHUNK_BYTES = 1 << 22


def conv_rows_per_chunk(bytes_per_image: int) -> int:
    """Images per convolution call such that its output stays within :data:`CONV_CHUNK_BYTES`."""
    return max(1, CONV_CHUNK_BYTES // max(1, bytes_per_image))


def decision_macs(decide: DecisionFunction) -> int:
    """MACs per image that ``decide`` itself spends: the sum over the ``L-1`` decisions of one image,
    counted with :mod:`prune_gym.pruning.counting`'s conventions (linear and GRU products; no
    elementwise work). A decision function states it as an integer ``decision_macs`` attribute (an
    agent's decision network does; :class:`~prune_gym.agents.rnp_dqn.RecurrentDecider` counts its
    encoders, GRU cell and decoder). A function without one is a scripted rule (a constant, a random
    draw) and costs 0 MACs. The observation's global average pools are not counted (pooling, as
    everywhere in the counter)."""
    macs = getattr(decide, "decision_macs", 0)
    if isinstance(macs, bool) or not isinstance(macs, (int, np.integer)) or macs < 0:
        raise TypeError(f"decision_macs of {decide!r} must be an integer ≥ 0 (MACs per image), got {macs!r}.")
    return int(macs)


def observation_size(spec: BackboneSpec) -> int:
    """Length of the decision input for a backbone (layout in :class:`RuntimePrunedNet`)."""
    return max(spec.widths) + (len(spec.widths) - 1) + 1


class RuntimePrunedNet:
    """A frozen, BN-folded view of a :class:`GroupedCNN` that runs any per-image group choice.

    The observation given to the decision function before deciding layer ``l`` (1-based among
    conv layers, ``l ≥ 1``) is a float32 vector of length :attr:`observation_size`:

    ============================  ===========================================================
    slice                         content
    ============================  ===========================================================
    ``[0, W)``                    global average pool of layer ``l-1``'s output (post ReLU),
                                  zero-padded to ``W`` = the widest layer
    ``[W, W + D)``                one-hot of the decision index ``l-1`` (``D`` = conv layers − 1)
    ``[W + D]``                   fraction of the full network's MACs used so far (0–1)
    ============================  ===========================================================

    Args:
        backbone: the trained network; its current weights are folded (call :meth:`refresh`
            after changing them).
        image_shape: C×H×W of the inputs, to trace per-layer costs.
        channels_last: keep activations in channels_last layout (faster for CPU convolutions).
    """

    def __init__(self, backbone: GroupedCNN, image_shape: Sequence[int], channels_last: bool = True):
        self.backbone = backbone
        self.k = backbone.k
        self.num_decisions = backbone.num_decisions
        self.image_shape = tuple(image_shape)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.costs: list[LayerCost] = trace_layer_costs(backbone.to_dense(), image_shape)
        self.macs_full = sum(cost.macs() for cost in self.costs)
        self.max_width = max(backbone.spec.widths)
        self.observation_size = observation_size(backbone.spec)
        self.refresh()

    @property
    def device(self) -> torch.device:
        return self.backbone.head.weight.device

    @torch.no_grad()
    def refresh(self) -> None:
        """Forget folded weights, so the backbone's current weights are used (after fine-tuning)."""
        self._folded: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._head_weight = self.backbone.head.weight.detach().clone()
        self._head_bias = self.backbone.head.bias.detach().clone()

    @torch.no_grad()
    def _layer_weights(self, layer: int, groups: int, width_in: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Conv weight and bias of ``layer`` at ``groups`` output groups on ``width_in`` input
        channels, with that pair's BN folded in; computed on first use, then cached."""
        key = (layer, groups, width_in)
        if key not in self._folded:
            backbone = self.backbone
            norm = backbone.norms[layer][backbone.norm_index(layer, backbone.input_groups(layer, width_in), groups)]
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            weight = backbone.convs[layer].weight[: norm.num_features, :width_in] * scale.view(-1, 1, 1, 1)
            self._folded[key] = (weight.contiguous(memory_format=self.memory_format),
                                 norm.bias - norm.running_mean * scale)
        return self._folded[key]

    def _conv_pool_relu(self, layer: int, x: torch.Tensor, groups: int) -> torch.Tensor:
        weight, bias = self._layer_weights(layer, 1 if layer == 0 else groups, x.shape[1])
        rows = conv_rows_per_chunk(weight.shape[0] * x.shape[2] * x.shape[3] * x.element_size())
        if x.shape[0] <= rows:
            return self._conv_pool_relu_rows(layer, x, weight, bias)
        return torch.cat([self._conv_pool_relu_rows(layer, x[start: start + rows], weight, bias)
                          for start in range(0, x.shape[0], rows)])

    def _conv_pool_relu_rows(self, layer: int, x: torch.Tensor, weight: torch.Tensor,
                             bias: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, weight, bias, padding=1)
        if self.backbone.spec.pool_after[layer]:
            return F.relu_(max_pool_2x2_channels_last(y))
        return F.relu_(y)

    def stem(self, images: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Layer 0 at full width on normalised images.

        Returns:
            activations, active channels per image (int64), MACs used per image (int64).
        """
        x = images.to(self.device).contiguous(memory_format=self.memory_format)
        h = self._conv_pool_relu(0, x, self.k)
        count = images.shape[0]
        return h, np.full(count, h.shape[1], dtype=np.int64), np.full(count, self.costs[0].macs(), dtype=np.int64)

    def layer(
        self, layer: int, h: torch.Tensor, in_widths: np.ndarray, groups: np.ndarray | int
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Conv layer ``layer`` (1..L-1) at ``groups`` (1..k, per image or for all).

        Returns:
            activations, active channels per image, MACs of this layer per image.
        """
        output = run_grouped(h, in_widths, groups, lambda xs, g: self._conv_pool_relu(layer, xs, g))
        out_widths = self.backbone.widths_of(layer, groups, len(in_widths))
        return output, out_widths, self.costs[layer].macs(in_widths, out_widths)

    def _classify(self, h: torch.Tensor) -> torch.Tensor:
        pooled = h.mean(dim=(2, 3))
        return F.linear(pooled, self._head_weight[:, : pooled.shape[1]], self._head_bias)

    def head(self, h: torch.Tensor, in_widths: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Logits from the last layer's activations, and the classifier's MACs per image."""
        return self._classify(h), self.costs[-1].macs(in_widths)

    def observation(self, h: torch.Tensor, decision_index: int | None, macs_used: np.ndarray) -> np.ndarray:
        """The decision input before decided layer ``decision_index + 1`` (layout in the class
        docstring); ``decision_index=None`` gives the final observation, with an all-zero one-hot."""
        return self._bucket_observation([(slice(None), h)], decision_index, macs_used)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, decide: DecisionFunction) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Classify normalised ``images`` computing only the groups ``decide`` picks.

        Unlike the environments' step-by-step path (:meth:`layer`: one zero-padded tensor for the
        batch), images are kept in *buckets* of equal active width, each a dense tensor of exactly
        that many channels. A decided layer splits a bucket by the chosen group counts (one
        gather only where a bucket splits), runs one sliced conv per (width, groups) present, and
        concatenates the outputs of equal width into the next buckets: no zero-fill, no scatter,
        no channel slicing of a padded tensor, and at most ``k`` buckets per layer. Observations
        are the same as the step-by-step path's (tested).

        A greedy decision network with a ``decision_cell()`` (the RNP-DQN's) decides in torch,
        bucket by bucket, each bucket carrying its images' recurrent state: no numpy observation is
        built, and the network reads each bucket's pooled features through the weight columns of
        its active channels (the zero padding would add nothing). Same choices and logits as its
        numpy ``decide(obs)`` up to float summation order (tested). Other decision functions get
        the numpy observations of :meth:`observation`.

        Returns:
            logits (N×classes), backbone MACs per image (int64; the decision function's own are
            :func:`decision_macs`), chosen group counts (int64 N×(L-1), 1..k).
        """
        count = images.shape[0]
        h, widths, macs = self.stem(images)
        constant = getattr(decide, "constant_action", None)
        cell = self._greedy_cell(decide) if constant is None else None
        # A bucket: (rows of the batch, their activations, their decision state or None).
        buckets: list[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]] = [
            (np.arange(count), h, cell.initial_states(count) if cell is not None else None)]
        chosen = np.empty((count, self.num_decisions), dtype=np.int64)
        for index in range(self.num_decisions):
            layer = index + 1
            if cell is not None:
                buckets = [self._decide_bucket(cell, index, macs, bucket, chosen) for bucket in buckets]
            elif constant is not None:
                chosen[:, index] = constant + 1
            else:
                obs = self._bucket_observation([(rows, activations) for rows, activations, _ in buckets], index, macs)
                chosen[:, index] = np.asarray(decide(obs), dtype=np.int64).reshape(-1) + 1
            choice = chosen[:, index]
            pieces: dict[int, list[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]] = {}
            for rows, activations, state in buckets:
                bucket_choice = choice[rows]
                for groups in np.unique(bucket_choice).tolist():
                    selected = np.flatnonzero(bucket_choice == groups)
                    if len(selected) < len(rows):
                        picked = torch.from_numpy(selected)
                        activations_part = activations[picked]
                        state_part = state[picked] if state is not None else None
                    else:
                        activations_part, state_part = activations, state
                    output = self._conv_pool_relu(layer, activations_part, groups)
                    pieces.setdefault(output.shape[1], []).append((rows[selected], output, state_part))
            buckets = [_merge_bucket_parts(parts) for parts in pieces.values()]
            out_widths = self.backbone.widths_of(layer, choice, count)
            macs = macs + self.costs[layer].macs(widths, out_widths)
            widths = out_widths
        logits = torch.empty((count, self.backbone.num_classes), device=self.device)
        for rows, activations, _ in buckets:
            logits[torch.from_numpy(rows).to(self.device)] = self._classify(activations)
        return logits, macs + self.costs[-1].macs(widths), chosen

    @staticmethod
    def _greedy_cell(decide: DecisionFunction):
        """``decide``'s torch decision cell when it has one and is greedy, else None."""
        make_cell = getattr(decide, "decision_cell", None)
        if make_cell is None or getattr(decide, "explores", False):
            return None
        return make_cell()

    def _decide_bucket(self, cell, index: int, macs_used: np.ndarray,
                       bucket: tuple[np.ndarray, torch.Tensor, torch.Tensor], chosen: np.ndarray):
        """Run decision ``index`` of ``cell`` on one bucket, write its group counts into ``chosen``
        and return the bucket with its new states."""
        rows, activations, state = bucket
        fraction = torch.from_numpy((macs_used[rows] / self.macs_full).astype(np.float32)).unsqueeze(1)
        q, state = cell.step(activations.mean(dim=(2, 3)), index, fraction.to(self.device), state)
        chosen[rows, index] = q.argmax(dim=1).cpu().numpy() + 1
        return rows, activations, state

    def _bucket_observation(self, buckets: list[tuple[np.ndarray | slice, torch.Tensor]], decision_index: int | None,
                            macs_used: np.ndarray) -> np.ndarray:
        """:meth:`observation` for images held in buckets (rows, activations of their width); the
        step-by-step path's padded batch is one bucket holding every row."""
        obs = np.zeros((len(macs_used), self.observation_size), dtype=np.float32)
        for rows, activations in buckets:
            obs[rows, : activations.shape[1]] = activations.mean(dim=(2, 3)).cpu().numpy()
        if decision_index is not None:
            obs[:, self.max_width + decision_index] = 1.0
        obs[:, -1] = macs_used / self.macs_full
        return obs

    __call__ = forward

    @torch.inference_mode()
    def forward_static(self, images: torch.Tensor, groups: int) -> torch.Tensor:
        """Logits with every decided layer at ``groups`` groups for all images: the bare kernel
        sequence (no observations, decisions or accounting), i.e. a statically pruned network.
        Its latency is the floor any per-image decision path is measured against."""
        h = self._conv_pool_relu(0, images.to(self.device).contiguous(memory_format=self.memory_format), self.k)
        for layer in range(1, self.num_decisions + 1):
            h = self._conv_pool_relu(layer, h, groups)
        return self._classify(h)


def _merge_bucket_parts(parts: list[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]):
    """One bucket from the parts of equal width: rows, activations and states concatenated."""
    if len(parts) == 1:
        return parts[0]
    states = [state for _, _, state in parts]
    return (np.concatenate([rows for rows, _, _ in parts]), torch.cat([output for _, output, _ in parts]),
            torch.cat(states) if states[0] is not None else None)


def uniform_decision(action: int) -> DecisionFunction:
    """A decision function that always picks ``action`` (``action + 1`` groups) for every image."""

    def decide(observations: np.ndarray) -> np.ndarray:
        return np.full(observations.shape[0], action, dtype=np.int64)

    decide.decision_macs = 0  # a constant: no network runs
    decide.constant_action = action  # lets the single-image and batched paths skip observations
    return decide
