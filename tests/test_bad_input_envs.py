"""Issue 12's environment items as regression tests: bad actions and arguments get one clear
error, never a silently different task. (Data, weights and run files: the other test_bad_input files.)"""

import gymnasium as gym
import numpy as np
import pytest
from conftest import cheap_kwargs

SYNTHETIC = {"pretrain_steps": 40, "device": "cpu"}


def test_the_vector_env_refuses_float_actions_as_the_single_env_does():
    # Before: 2.7 acted as 2 in the vector env while the single env refused it.
    vector = gym.make_vec("RNP-Synthetic-v0", num_envs=3, **SYNTHETIC)
    vector.reset(seed=0)
    with pytest.raises(ValueError, match="Invalid actions.*integer array"):
        vector.step(np.array([0.0, 2.7, 1.0]))
    single = gym.make("RNP-Synthetic-v0", **SYNTHETIC).unwrapped
    single.reset(seed=0)
    with pytest.raises(ValueError, match="Invalid action 2.7"):
        single.step(2.7)


@pytest.mark.parametrize("k", [np.int64(2), 2.0])
def test_integral_numbers_of_any_type_are_accepted(k):
    env = gym.make("RNP-Synthetic-v0", k=k, **SYNTHETIC)
    assert env.unwrapped.settings.k == 2 and type(env.unwrapped.settings.k) is int and env.action_space.n == 2


def test_a_non_integer_k_is_a_type_error_not_a_backbone_misfit():
    # Before: "k=2.5 channel groups do not fit backbone 'cnn4'".
    with pytest.raises(ValueError, match=r"^k must be an integer ≥ 1, got 2\.5\.$"):
        gym.make("RNP-Synthetic-v0", k=2.5, **SYNTHETIC)


@pytest.mark.parametrize(("env_id", "kwargs", "message"), [
    ("RNP-Synthetic-v0", {"group_penalty": 0.05}, "group_penalty must be ≤ 0"),
    ("RNP-Synthetic-v0", {"ce_weight": -1.0}, "ce_weight must be ≥ 0"),
    ("RNP-Synthetic-v0", {"reward_mode": "macs", "mac_weight": -1.0}, "mac_weight must be ≥ 0"),
    ("DropNet-MNIST-FC-v0", {"mac_weight": -1.0}, "mac_weight must be ≥ 0"),
    ("LayerPrune-MNIST-v1", {"ce_weight": -0.5}, "ce_weight must be ≥ 0"),
    ("AlphaBlend-CIFAR10-v1", {"step_cost": -0.01}, "step_cost must be ≥ 0"),
])
def test_sign_flipped_reward_weights_are_refused(env_id, kwargs, message, fake_data_dir):
    # Before: accepted, and the env silently rewarded computing more or predicting worse.
    with pytest.raises(ValueError, match=message):
        gym.make(env_id, **{**cheap_kwargs(env_id, fake_data_dir), **kwargs})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pool_before": [0]}, r"pool_before must be a list of increasing layer indices in 1..6 .*got \[0\]"),
    ({"pool_before": [4, 2]}, r"pool_before must be a list of increasing layer indices"),
    ({"pool_before": 3}, r"pool_before must be a list of increasing layer indices"),
    ({"stem_stride": 3}, r"stem_stride must be an integer in 1..2"),
    ({"augment": "yes"}, r"augment must be true or false"),
])
def test_layerprune_network_shape_arguments_are_checked(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        gym.make("LayerPrune-MNIST-v1", **kwargs)


def test_unknown_arguments_name_the_valid_ones():
    with pytest.raises(TypeError, match=r"Unknown LayerPrune arguments \['epoch'\]; valid arguments: .*'epochs'"):
        gym.make("LayerPrune-MNIST-v1", epoch=3)
