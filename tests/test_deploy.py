"""The deployment paths give the runtime's outputs and choices under the same decision network."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from prune_gym.agents.rnp_dqn import RecurrentDecider, q_network_for
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
