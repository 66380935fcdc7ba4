import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import cheap_kwargs, requires_shared_data

from prune_gym.baselines.registry import policies_for
from prune_gym.envs.dropnet import OBS_SIZE, RULE_ACTIONS
from prune_gym.models.masked_net import HiddenLayer, MaskedNet, MaskedNetSpec, get_masked_net_spec
from prune_gym.pruning.counting import count_macs, count_params
from prune_gym.pruning.importance import mean_abs_activation
from prune_gym.pruning.masks import DROP_RULES, drop_in_layer, select_drop

FC = "DropNet-MNIST-FC-v0"


def fc_env(fake_data_dir, **overrides):
    return gym.make(FC, **{**cheap_kwargs(FC, fake_data_dir), **overrides})


def test_episode_accounting_and_reward(fake_data_dir):
    env = fc_env(fake_data_dir, max_cycles=5)
    obs, info = env.reset(seed=0)
    assert obs.shape == (OBS_SIZE,) and obs.dtype == np.float32
    assert info["cycle"] == 0 and info["macs"] == info["macs_full"] and info["units_kept_fraction"] == 1.0
    assert info["units_kept"] == info["units_full"] == [40, 40]
    obs, reward, terminated, truncated, step_info = env.step(RULE_ACTIONS.index("min_layer"))
    assert step_info["units_kept"] == [32, 32] and step_info["cycle"] == 1 and step_info["action_name"] == "min_layer"
    network = env.unwrapped.network
    expected_macs = count_macs(network, (1, 28, 28), {"hidden.0": 32, "hidden.1": 32})
    assert step_info["macs"] == expected_macs == 784 * 32 + 32 * 32 + 32 * 10
    assert step_info["params"] == count_params(network, (1, 28, 28), {"hidden.0": 32, "hidden.1": 32})
    ce_rise = step_info["cross_entropy"] - info["cross_entropy"]
    expected = (info["macs"] - step_info["macs"]) / info["macs_full"] - ce_rise
    assert isinstance(reward, float) and reward == pytest.approx(expected)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert step_info["kappa_violated"] == (step_info["val_accuracy"] < 0.98 * info["val_accuracy"])
    for key in ("val_accuracy", "cross_entropy", "test_accuracy", "params_full"):
        assert key in step_info


def test_stop_ends_the_episode_and_step_after_end_is_an_error(fake_data_dir):
    env = fc_env(fake_data_dir)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(RULE_ACTIONS.index("stop"))
    assert terminated and not truncated and reward == 0.0 and info["units_kept_fraction"] == 1.0
    assert info["cycle"] == 1  # stop is a step like any other
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_kappa_ends_the_episode(fake_data_dir):
    env = fc_env(fake_data_dir, kappa=1.0, drop_fraction=0.9)  # any drop that loses accuracy ends it
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(0)
    assert info["kappa_violated"] == (info["val_accuracy"] < info["val_accuracy_full"])
    assert terminated == info["kappa_violated"]


def test_truncates_after_max_cycles_and_min_units_end(fake_data_dir):
    env = fc_env(fake_data_dir, kappa=0.0, max_cycles=2)
    env.reset(seed=0)
    assert env.step(0)[2:4] == (False, False)
    assert env.step(0)[2:4] == (False, True)
    env = fc_env(fake_data_dir, kappa=0.0, drop_fraction=1.0, max_cycles=5)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(RULE_ACTIONS.index("min_layer"))
    assert terminated and not truncated and info["units_kept"] == [1, 1]


def test_layer_action_mode(fake_data_dir):
    env = fc_env(fake_data_dir, action_mode="layer", kappa=0.0)
    assert env.action_space.n == 3 and env.unwrapped.action_names == ("drop_layer0", "drop_layer1", "stop")
    env.reset(seed=0)
    _, _, _, _, info = env.step(1)
    assert info["units_kept"] == [40, 32]
    with pytest.raises(ValueError, match="action_mode='rule'"):
        policies_for(FC)[0].make(env.unwrapped)


def test_bad_actions_and_kwargs_say_what_is_valid(fake_data_dir):
    env = fc_env(fake_data_dir)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"0\.\.6 .*0 min, 1 max.*6 stop"):
        env.step(7)
    for kwargs, message in [({"kappa": 1.5}, r"kappa must be a fraction in \[0, 1\]"),
                            ({"drop_fraction": 0.0}, "drop_fraction"),
                            ({"network": "vgg19"}, "conv64-conv32"), ({"action_mode": "both"}, "rule"),
                            ({"max_epochs": 0}, "max_epochs"),
                            ({"min_units": 41}, r"min_units must be an integer in 1\.\.40"),
                            ({"ce_weight": -1.0}, "ce_weight must be ≥ 0"), ({"max_cycles": 2.5}, "max_cycles"),
                            ({"dataset": "imagenet"}, "mnist"), ({"train_subset": 0}, "train_subset")]:
        with pytest.raises(ValueError, match=message):
            gym.make(FC, **kwargs)


def test_train_subset_trains_and_scores_on_that_many_images(fake_data_dir):
    whole = fc_env(fake_data_dir)
    whole.reset(seed=0)
    env = fc_env(fake_data_dir, train_subset=20)
    _, info = env.reset(seed=0)
    core = env.unwrapped._core
    assert len(core.train_labels) == len(core.train_inputs) == 20 < len(whole.unwrapped._core.train_labels)
    # The subset is a different training set: a different trained network, the same test split.
    assert info["val_accuracy"] != whole.unwrapped._full.val_accuracy or info["cross_entropy"] != pytest.approx(
        whole.unwrapped._full.val_cross_entropy)
    assert torch.equal(core.x_test, whole.unwrapped._core.x_test)


def test_masked_unit_contributes_nothing_and_gets_no_gradient():
    torch.manual_seed(0)
    spec = MaskedNetSpec("t", (HiddenLayer("conv", 4, pool=True), HiddenLayer("dense", 6)))
    net = MaskedNet(spec, (1, 8, 8), 3)
    images = torch.randn(5, 1, 8, 8)
    net.set_masks([torch.tensor([1, 0, 1, 1]), torch.tensor([1, 1, 1, 0, 1, 1])])
    before = net(images)
    with torch.no_grad():  # whatever the masked units' weights are, the output does not change
        net.hidden[0].weight[1].normal_(0, 10)
        net.hidden[0].bias[1] = 5.0
        net.hidden[1].weight[3].normal_(0, 10)
        net.hidden[1].bias[3] = 5.0
    activations = []
    after = net(images, activations)
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert activations[0][:, 1].abs().sum() == 0 and activations[1][:, 3].abs().sum() == 0
    after.sum().backward()
    assert net.hidden[0].weight.grad[1].abs().sum() == 0 and net.hidden[1].weight.grad[3].abs().sum() == 0
    assert net.hidden[0].weight.grad[0].abs().sum() > 0


def reference_forward(net, images, activations):
    """MaskedNet's forward as first written: ReLU, then NCHW max-pooling, then the mask."""
    x = images
    for layer, spec, mask in zip(net.hidden, net.spec.layers, net.masks):
        x = torch.relu(layer(x.flatten(1) if spec.kind == "dense" and x.dim() > 2 else x))
        x = torch.nn.functional.max_pool2d(x, 2) if spec.pool else x
        x = x * (mask.view(1, -1, 1, 1) if x.dim() == 4 else mask)
        activations.append(x)
    return net.head(x.flatten(1))


@pytest.mark.parametrize("network, shape", [("conv64-conv32", (1, 28, 28)),
                                            ("conv64x2-conv128x2-dense256", (3, 32, 32))])
def test_the_faster_forward_gives_the_reference_forwards_bits(network, shape):
    # The speed-ups (pooling before the ReLU, channels_last pooling without autograd, 128-image
    # chunks) must leave every DropNet figure unchanged: on the 1,000-image batches the env scores,
    # the same logits and activations as the original forward; with autograd the same gradients.
    torch.manual_seed(0)
    net = MaskedNet(get_masked_net_spec(network), shape, 10)
    net.set_masks([torch.rand(len(mask)) > 0.3 for mask in net.masks])
    images = torch.randn(1000, *shape)
    with torch.no_grad():
        expected_activations, chunked_activations = [], []
        expected = reference_forward(net, images, expected_activations)
        chunked = net.forward_in_chunks(images, chunked_activations)
    assert torch.equal(chunked, expected)
    assert all(torch.equal(a, b) for a, b in zip(chunked_activations, expected_activations, strict=True))
    batch = images[:64]
    reference_grads = torch.autograd.grad(reference_forward(net, batch, []).square().sum(), list(net.parameters()))
    grads = torch.autograd.grad(net(batch).square().sum(), list(net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(grads, reference_grads, strict=True))


def test_masked_counts_equal_the_smaller_dense_model():
    big = MaskedNet(get_masked_net_spec("conv64-conv32"), (1, 28, 28), 10)
    small = MaskedNet(MaskedNetSpec("s", (HiddenLayer("conv", 20, pool=True), HiddenLayer("conv", 7, pool=True))),
                      (1, 28, 28), 10)
    kept = {"hidden.0": 20, "hidden.1": 7}
    assert count_macs(big, (1, 28, 28), kept) == count_macs(small, (1, 28, 28))
    assert count_params(big, (1, 28, 28), kept) == count_params(small, (1, 28, 28))
    # No batch norm in these nets: the counter's weights and biases are every parameter.
    assert count_params(big, (1, 28, 28)) == sum(parameter.numel() for parameter in big.parameters())


def test_rewind_restores_theta0_exactly_and_retraining_reproduces(fake_data_dir):
    env = fc_env(fake_data_dir, kappa=0.0)
    env.reset(seed=0)
    dropnet = env.unwrapped
    theta0 = dropnet._theta0
    trained = {name: value.clone() for name, value in dropnet.network.state_dict().items()}
    assert any(not torch.equal(trained[name], theta0[name]) for name in theta0)  # training moved the weights
    keep = [np.arange(40) % 2 == 0, np.ones(40, dtype=bool)]
    dropnet._core.rewind(theta0, keep)
    for name, value in dropnet.network.state_dict().items():
        if name.startswith("mask"):
            np.testing.assert_array_equal(value.numpy(), keep[int(name[4:])])
        else:
            assert torch.equal(value, theta0[name]), name
    # DropNet's final retrain from θ0 reproduces a cycle's network exactly (no memo involved).
    _, _, _, _, info = env.step(RULE_ACTIONS.index("min"))
    stepped = {name: value.clone() for name, value in dropnet.network.state_dict().items()}
    dropnet._trained_by_architecture.clear()
    assert dropnet.retrain_from_init(dropnet.keep_masks)["cross_entropy"] == info["cross_entropy"]
    retrained = dropnet._trained_by_architecture[dropnet._architecture_key(dropnet.keep_masks)].state
    for name in stepped:
        assert torch.equal(stepped[name], retrained[name]), name


SCORES = [np.array([0.5, 0.1, 0.9, 0.3]), np.array([0.2, 0.8])]
ALL = [np.ones(4, dtype=bool), np.ones(2, dtype=bool)]


@pytest.mark.parametrize("rule, dropped", [
    ("min", [[1, 3], [0]]),          # 3 of 6 lowest overall: 0.1, 0.2, 0.3
    ("max", [[0, 2], [1]]),          # 0.9, 0.8, 0.5
    ("min_layer", [[1, 3], [0]]),    # 2 of 4 and 1 of 2 per layer
    ("max_layer", [[0, 2], [1]]),
])
def test_each_rule_drops_the_units_it_claims(rule, dropped):
    keep = select_drop(rule, SCORES, ALL, 0.5, np.random.default_rng(0))
    assert [sorted(np.flatnonzero(~mask).tolist()) for mask in keep] == dropped
    assert all(mask.all() for mask in ALL)  # the input masks are not modified


def test_global_min_never_empties_a_layer_and_counts_remaining_units():
    scores = [np.array([5.0, 6.0, 7.0]), np.array([0.01, 0.02])]
    keep = select_drop("min", scores, [np.ones(3, bool), np.ones(2, bool)], 0.6, np.random.default_rng(0))
    assert keep[1].sum() == 1 and keep[0].tolist() == [False, False, True]  # 3 drops: 0.01, then 5, 6
    partial = [np.array([True, False, True, True]), np.ones(2, bool)]
    keep = select_drop("min", SCORES, partial, 0.4, np.random.default_rng(0))  # 5 remaining → 2 drops
    assert [np.flatnonzero(~m).tolist() for m in keep] == [[1, 3], [0]]  # 0.1 was already gone


@pytest.mark.parametrize("rule", ["random", "random_layer"])
def test_random_rules_drop_the_right_number_reproducibly(rule):
    first = select_drop(rule, SCORES, ALL, 0.5, np.random.default_rng(1))
    second = select_drop(rule, SCORES, ALL, 0.5, np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(first, second))
    dropped = [int((~mask).sum()) for mask in first]
    assert sum(dropped) == 3 and (rule == "random" or dropped == [2, 1])
    rates = np.mean([select_drop(rule, SCORES, ALL, 0.5, np.random.default_rng(s))[0] for s in range(300)], axis=0)
    assert np.all(np.abs(rates - rates.mean()) < 0.12)  # no unit favoured: scores are ignored


def test_drop_in_layer_and_unknown_rule():
    assert drop_in_layer("min", SCORES[0], ALL[0], 0.25, np.random.default_rng(0)).tolist() == [True, False, True, True]
    assert drop_in_layer("min", SCORES[1], np.array([False, True]), 0.5, np.random.default_rng(0)).tolist() == [
        False, True]  # min_units=1 stays
    with pytest.raises(ValueError, match="min_layer"):
        select_drop("median", SCORES, ALL, 0.5, np.random.default_rng(0))


def test_mean_abs_activation_on_known_activations():
    dense = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    conv = torch.zeros(2, 1, 2, 2)
    conv[0, 0, 0, 0], conv[1, 0, 1, 1] = -4.0, 8.0

    def forward(images, activations):
        activations.extend([dense[images], conv[images]])

    scores = mean_abs_activation(forward, [torch.tensor([0]), torch.tensor([1])])
    np.testing.assert_allclose(scores[0].numpy(), [2.0, 1.0])
    np.testing.assert_allclose(scores[1].numpy(), [(4 / 4 + 8 / 4) / 2])


def test_six_policies_are_registered_and_choose_their_rule(fake_data_dir):
    env = fc_env(fake_data_dir)
    policies = policies_for(FC)
    assert [policy.name for policy in policies] == list(DROP_RULES)
    obs, info = env.reset(seed=0)
    for policy in policies:
        assert policy.make(env.unwrapped)(obs, info) == RULE_ACTIONS.index(policy.name)


@pytest.mark.slow
@requires_shared_data
def test_real_mnist_fc_cycle():
    from conftest import SHARED_DATA

    env = gym.make(FC, data_root=str(SHARED_DATA / "mnist-subset.npz"), max_epochs=2, device="cpu")
    _, info = env.reset(seed=0)
    assert info["test_accuracy"] > 0.75  # FC40-FC40 after two epochs on 3,310 real training digits
    _, _, _, _, info = env.step(0)
    assert info["units_kept_fraction"] == 0.8 and info["test_accuracy"] > 0.7


@pytest.mark.parametrize("network", ["fc40-fc40", "conv64-conv32", "conv64x2-conv128x2-dense256"])
def test_counter_agrees_with_flop_counter_on_every_network(network):
    from torch.utils.flop_counter import FlopCounterMode

    shape = (3, 32, 32) if "128" in network else (1, 28, 28)
    model = MaskedNet(get_masked_net_spec(network), shape, 10)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *shape))
    assert 2 * count_macs(model, shape) == counter.get_total_flops()
