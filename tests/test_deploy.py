"""The deployment paths give the runtime's outputs and choices under the same decision network."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from prune_gym.agents.rnp_dqn import RecurrentDecider, SingleImageDecisionCell, q_network_for
from prune_gym.data import normalize
from prune_gym.pruning.deploy import SingleImagePath
from prune_gym.pruning.runtime import uniform_decision

SYNTHETIC = {"pretrain_steps": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def env():
    env = gym.make("RNP-Synthetic-v0", **SYNTHETIC).unwrapped
    env.reset(seed=0)
    return env


def opinionated_decider(runtime, seed: int = 0) -> RecurrentDecider:
    """A random decision network whose choices depend strongly on the image (large decoder weights)."""
    torch.manual_seed(seed)
    network = q_network_for(runtime, hidden_size=16).eval()
    with torch.no_grad():
        network.decoder.weight.mul_(50.0)
        for encoder in network.encoders:
            encoder.weight.mul_(20.0)
    return RecurrentDecider(network, runtime.max_width)


def test_single_image_path_equals_the_runtime_under_the_same_decision_network(env):
    runtime = env.runtime
    decide = opinionated_decider(runtime)
    path = SingleImagePath(runtime, decide)
    assert isinstance(path.cell, SingleImageDecisionCell)  # the numpy cell, on the CPU
    images, _ = env.dataset.split("test", env.settings.val_fraction)
    inputs = normalize(images[:48], env.dataset)
    chosen_all = []
    for index in range(len(inputs)):
        logits, macs, chosen = runtime(inputs[index: index + 1], decide)
        fast_logits, fast_macs, fast_chosen = path(inputs[index: index + 1])
        assert fast_chosen == chosen[0].tolist() and fast_macs == int(macs[0])
        torch.testing.assert_close(fast_logits, logits, rtol=1e-5, atol=1e-5)
        chosen_all.append(fast_chosen)
    assert len({tuple(c) for c in chosen_all}) > 1  # the test exercises more than one path
    assert path.decision_macs == decide.network.macs_per_image()


def test_numpy_single_image_cell_equals_the_torch_cell_at_every_decision(env):
    """The batch-1 path decides in numpy on the CPU (less dispatch per operation); its Q-values
    and states must be the torch cell's up to float summation order, at every decision and width."""
    decide = opinionated_decider(env.runtime, seed=1)
    torch_cell, numpy_cell = decide.decision_cell(), decide.single_image_cell()
    generator = torch.Generator().manual_seed(0)
    for widths in ([4, 8, 16], [16, 32, 64]):
        torch_state, numpy_state = torch_cell.initial_state(), numpy_cell.initial_state()
        for index in range(env.runtime.num_decisions):
            pooled = 3 * torch.rand(1, min(widths[index % 3], env.runtime.max_width), generator=generator)
            with torch.inference_mode():
                torch_q, torch_state = torch_cell.step(pooled, index, 0.2 + 0.1 * index, torch_state)
            numpy_q, numpy_state = numpy_cell.step(pooled, index, 0.2 + 0.1 * index, numpy_state)
            np.testing.assert_allclose(numpy_q, torch_q.numpy().ravel(), rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(numpy_state, torch_state.numpy().ravel(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="explores"):
        RecurrentDecider(decide.network, env.runtime.max_width, epsilon=0.1).single_image_cell()


@pytest.mark.parametrize("action", [0, 3])
def test_single_image_path_runs_constant_rules_without_a_network(env, action):
    runtime = env.runtime
    image = normalize(env.dataset.split("test", env.settings.val_fraction)[0][:1], env.dataset)
    logits, macs, chosen = runtime(image, uniform_decision(action))
    fast_logits, fast_macs, fast_chosen = SingleImagePath(runtime, uniform_decision(action))(image)
    assert fast_chosen == [action + 1] * runtime.num_decisions and fast_macs == int(macs[0])
    torch.testing.assert_close(fast_logits, logits)


def test_single_image_path_refuses_numpy_only_rules(env):
    with pytest.raises(TypeError, match="decision_cell"):
        SingleImagePath(env.runtime, lambda obs: np.zeros(len(obs), dtype=np.int64))


def test_bucketed_batch_equals_one_image_at_a_time_and_the_step_by_step_path(env):
    runtime = env.runtime
    decide = opinionated_decider(runtime, seed=1)
    images, _ = env.dataset.split("test", env.settings.val_fraction)
    inputs = normalize(images[:64], env.dataset)
    logits, macs, chosen = runtime(inputs, decide)
    assert len({tuple(row) for row in chosen.tolist()}) > 2
    for index in range(len(inputs)):
        single_logits, single_macs, single_chosen = runtime(inputs[index: index + 1], decide)
        assert single_chosen[0].tolist() == chosen[index].tolist() and single_macs[0] == macs[index]
        torch.testing.assert_close(single_logits[0], logits[index], rtol=1e-5, atol=1e-5)
    # The environments' zero-padded step-by-step path (stem/layer/head) agrees too.
    with torch.inference_mode():
        h, widths, step_macs = runtime.stem(inputs)
        for index in range(runtime.num_decisions):
            h, widths, layer_macs = runtime.layer(index + 1, h, widths, chosen[:, index])
            step_macs = step_macs + layer_macs
        step_logits, head_macs = runtime.head(h, widths)
    assert (step_macs + head_macs).tolist() == macs.tolist()
    torch.testing.assert_close(step_logits, logits, rtol=1e-5, atol=1e-5)


def test_batches_cut_into_chunks_give_the_same_outputs_and_layout(env, monkeypatch):
    """Layers whose conv output would pass CONV_CHUNK_BYTES run in row chunks (an allocator
    workaround); the logits, MACs and choices must not change, nor the channels_last layout."""
    import prune_gym.pruning.runtime as runtime_module

    runtime = env.runtime
    decide = opinionated_decider(runtime, seed=2)
    images, _ = env.dataset.split("test", env.settings.val_fraction)
    inputs = normalize(images[:37], env.dataset)
    whole_logits, whole_macs, whole_chosen = runtime(inputs, decide)
    with torch.inference_mode():
        whole_stem = runtime.stem(inputs)[0]
    # The synthetic stem's conv output is 32 channels × 16×16 float32 per image: chunks of 5 images
    # there, of 10 and 20 in the next layers (37 images: uneven last chunks too).
    stem_bytes = whole_stem.shape[1] * inputs.shape[2] * inputs.shape[3] * 4
    monkeypatch.setattr(runtime_module, "CONV_CHUNK_BYTES", 5 * stem_bytes)
    assert runtime_module.conv_rows_per_chunk(stem_bytes) == 5
    logits, macs, chosen = runtime(inputs, decide)
    with torch.inference_mode():
        stem = runtime.stem(inputs)[0]
    assert stem.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(stem, whole_stem, rtol=1e-6, atol=1e-6)
    assert chosen.tolist() == whole_chosen.tolist() and macs.tolist() == whole_macs.tolist()
    torch.testing.assert_close(logits, whole_logits, rtol=1e-5, atol=1e-5)


def test_batched_forward_decides_in_torch_as_the_numpy_decision_function_does(env):
    """A greedy RNP-DQN decides inside the batched forward through its torch cell, bucket by
    bucket with per-image states; the same network called through numpy observations (any
    decision function without a cell takes that path) must give the same choices and logits."""
    runtime = env.runtime
    decide = opinionated_decider(runtime, seed=3)
    images, _ = env.dataset.split("test", env.settings.val_fraction)
    inputs = normalize(images[:64], env.dataset)

    def numpy_only(obs):
        return decide(obs)

    logits, macs, chosen = runtime(inputs, decide)
    numpy_logits, numpy_macs, numpy_chosen = runtime(inputs, numpy_only)
    assert len({tuple(row) for row in chosen.tolist()}) > 2  # buckets split and merge
    assert chosen.tolist() == numpy_chosen.tolist() and macs.tolist() == numpy_macs.tolist()
    torch.testing.assert_close(logits, numpy_logits, rtol=1e-5, atol=1e-5)
    # An exploring decider (ε > 0) draws its random choices in numpy: no cell is used.
    exploring = RecurrentDecider(decide.network, runtime.max_width, epsilon=1.0, rng=np.random.default_rng(0))
    assert runtime._greedy_cell(exploring) is None and runtime._greedy_cell(decide) is not None
    _, _, random_chosen = runtime(inputs, exploring)
    assert random_chosen.tolist() != chosen.tolist()


@pytest.mark.parametrize("rows", [1, 31, 32, 256])
def test_batched_linear_and_gru_cell_equal_torch_s_below_and_above_the_onednn_threshold(rows):
    from prune_gym.agents.rnp_dqn import gru_cell_batched
    from prune_gym.models.linear import batched_linear

    generator = torch.Generator().manual_seed(rows)
    x, state = torch.randn(rows, 24, generator=generator), torch.randn(rows, 16, generator=generator)
    weight, bias = torch.randn(40, 24, generator=generator), torch.randn(40, generator=generator)
    cell = torch.nn.GRUCell(24, 16)
    tensors = [tensor.detach() for tensor in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    with torch.inference_mode():
        torch.testing.assert_close(batched_linear(x, weight, bias), torch.nn.functional.linear(x, weight, bias))
        torch.testing.assert_close(batched_linear(x, weight), x @ weight.T)
        torch.testing.assert_close(gru_cell_batched(x, state, *tensors), torch.gru_cell(x, state, *tensors))
    # With autograd it is F.linear itself, gradients included.
    x.requires_grad_(True)
    batched_linear(x, weight, bias).sum().backward()
    torch.testing.assert_close(x.grad, weight.sum(0).expand(rows, -1))


def test_bench_reports_the_issue_s_keys_with_the_decision_network_charged(tmp_path):
    """``prune-gym bench``'s JSON, end to end on tiny counts: the keys issue 10 names, the MACs ratio
    with the decision network's MACs included, and the machine facts that move the timings."""
    import json

    from prune_gym.cli import main as cli_main

    out = tmp_path / "bench.json"
    cli_main(["bench", "RNP-Synthetic-v0", "--episodes", "1", "--num-envs", "4", "--latency-images", "2",
              "--passes", "1", "--batch-size", "4", "--json", str(out),
              "--env-kwargs", "pretrain_steps=2", "device=cpu"])
    figures = json.loads(out.read_text())
    for key in ("latency_full_ms", "latency_pruned_ms", "macs_ratio", "batched_throughput_full",
                "batched_throughput_pruned", "native_steps_per_s", "targets_met", "cpu_capability", "malloc_env"):
        assert key in figures, key
    assert figures["decision_macs"] > 0 and figures["macs_pruned"] > figures["decision_macs"]
    assert figures["macs_ratio"] == pytest.approx(figures["macs_full"] / figures["macs_pruned"], rel=1e-3)
    assert figures["macs_ratio"] < figures["macs_ratio_backbone"]  # charging the decisions lowers it
    assert figures["groups_mean"] == [1.0] * len(figures["groups_mean"])  # the default policy: narrowest
