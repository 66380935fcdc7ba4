import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import cheap_kwargs

from prune_gym.baselines.layerprune import ALPHA_THRESHOLD, threshold_action
from prune_gym.baselines.registry import get_policy, policies_for
from prune_gym.models.alpha_cnn import AlphaActivation, AlphaCNN
from prune_gym.pruning.counting import count_macs, count_params

ID = "LayerPrune-CIFAR10-v1"


def make(fake_data_dir, env_id=ID, **overrides):
    return gym.make(env_id, **{**cheap_kwargs(env_id, fake_data_dir), **overrides}).unwrapped




def test_alpha_follows_its_formula():
    activation = AlphaActivation()
    x = torch.linspace(-3, 3, 13)
    for gamma, nu in ((0.0, 5.0), (1.3, 0.0), (-0.7, 2.5), (2.0, 40.0)):
        activation.gamma.data.fill_(gamma)
        expected = torch.sigmoid((torch.sigmoid(torch.tensor(gamma)) - 0.5) * nu)
        assert torch.allclose(activation.alpha(nu), expected)
        assert torch.allclose(activation(x, nu), x + expected * torch.relu(-x))
    model = AlphaCNN(3, 10, width=4, depth=2, nu_rate=0.01)
    assert model.alphas() == [0.5, 0.5]  # ν_0 = 0
    for _ in range(250):
        model.advance()
    assert model.nu == pytest.approx(2.5)
    model.layers[0].activation.gamma.data.fill_(-0.7)
    assert model.alphas()[0] == pytest.approx(float(torch.sigmoid((torch.sigmoid(torch.tensor(-0.7)) - 0.5) * 2.5)))
    # α = 1 is a ReLU, α = 0 the identity.
    activation.gamma.data.fill_(50.0)
    assert torch.allclose(activation(x, 1e4), torch.relu(x))
    activation.gamma.data.fill_(-50.0)
    assert torch.allclose(activation(x, 1e4), x)


def test_removal_transfers_weights_and_histories_exactly():
    torch.manual_seed(0)
    model = AlphaCNN(3, 10, width=6, depth=4)
    for _ in range(3):
        for layer in model.layers:
            layer.activation.gamma.data.add_(0.1 * (layer.origin - 1.5))
        model.advance()
        model.record_history()
    model.train()
    model(torch.rand(8, 3, 32, 32))  # non-trivial BN running statistics
    rebuilt = model.without_layer(1)
    assert [layer.origin for layer in rebuilt.layers] == [0, 2, 3] and rebuilt.depth == 3 and model.depth == 4
    assert int(rebuilt.training_step) == 3
    kept = [model.layers[i] for i in (0, 2, 3)]
    for old, new in zip(kept, rebuilt.layers):
        for (name, a), (_, b) in zip(old.state_dict().items(), new.state_dict().items()):
            assert torch.equal(a, b), name
        assert new.gamma_history == old.gamma_history and new.alpha_history == old.alpha_history
        assert new.gamma_history is not old.gamma_history
    for part in ("stem", "head"):
        for a, b in zip(getattr(model, part).state_dict().values(), getattr(rebuilt, part).state_dict().values()):
            assert torch.equal(a, b)
    # The rebuilt network computes the old one without layer 1.
    model.eval(), rebuilt.eval()
    x = torch.rand(4, 3, 32, 32)
    h = model.stem(x)
    for layer in kept:
        h = layer(h, model.nu)
    assert torch.equal(rebuilt(x), model.head(h.mean(dim=(2, 3))))
    every = lambda module: sum(parameter.numel() for parameter in module.parameters())  # noqa: E731
    assert every(rebuilt) == every(model) - every(model.layers[1])


def test_stage_boundaries_stay_where_they_were_when_layers_go():
    """``pool_before`` pools by original index: removing a layer on either side of a boundary
    keeps the resolutions of the layers that remain (and so their MACs)."""
    torch.manual_seed(0)
    model = AlphaCNN(3, 10, width=4, depth=4, stem_stride=1, pool_before=(2,)).eval()
    images = torch.rand(2, 3, 32, 32)
    stem = model.stem(images)
    assert stem.shape[-1] == 16  # stride 1, then the stem's pool
    h = model.layers[1](model.layers[0](stem, model.nu), model.nu)
    h = model.layers[3](model.layers[2](F.max_pool2d(h, 2), model.nu), model.nu)
    assert torch.allclose(model(images), model.head(h.mean(dim=(2, 3))))
    layer_macs = 4 * 4 * 9  # one 4→4 3×3 conv per position
    full = count_macs(model, (3, 32, 32))
    assert full - count_macs(model.without_layer(0), (3, 32, 32)) == layer_macs * 16 * 16
    after_boundary = model.without_layer(2)
    assert full - count_macs(after_boundary, (3, 32, 32)) == layer_macs * 8 * 8
    # Both layers of the first stage gone: the pool still comes before layers 2 and 3.
    emptied = model.without_layer(0).without_layer(0)
    assert emptied.pool_before == (2,)
    h = emptied.layers[1](emptied.layers[0](F.max_pool2d(emptied.stem(images), 2), model.nu), model.nu)
    assert torch.allclose(emptied(images), emptied.head(h.mean(dim=(2, 3))))
    with pytest.raises(ValueError, match="pool_before must be increasing layer indices in 1..4"):
        AlphaCNN(3, 10, width=4, depth=4, pool_before=(3, 2))


def test_env_removal_masks_accounting_and_reward(fake_data_dir):
    env = make(fake_data_dir, epochs=4)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert info["macs"] == info["macs_full"] == count_macs(env.model, (3, 32, 32))
    assert env.action_masks().tolist() == [True, True, True, True]
    ce_before = info["cross_entropy"]
    obs, reward, terminated, truncated, info = env.step(2)  # remove original layer 1
    assert info["removed"] == 1 and info["depth"] == 2 and not info["invalid_action"]
    assert env.action_masks().tolist() == [True, True, False, True]
    assert obs[1] == 0.0 and obs[0] == obs[2] == 1.0  # alive flags
    assert info["macs"] == count_macs(env.model, (3, 32, 32)) < info["macs_full"]
    assert info["params"] == count_params(env.model, (3, 32, 32)) < info["params_full"]
    removed_fraction = (info["macs_full"] - info["macs"]) / info["macs_full"]
    assert reward == pytest.approx(removed_fraction - (info["cross_entropy"] - ce_before))
    histories = env.layer_histories()
    assert histories[1]["removed_at"] == 0 and len(histories[1]["alpha"]) == 1
    assert len(histories[0]["alpha"]) == 2 and histories[0]["removed_at"] is None
    assert obs[-1] == pytest.approx(1 / 4) and info["cycle"] == 1


def test_invalid_action_is_a_documented_outcome_not_a_crash(fake_data_dir):
    env = make(fake_data_dir, invalid_action_penalty=-0.5)
    env.reset(seed=0)
    env.step(1)
    ce_before = env._val["cross_entropy"]
    obs, reward, terminated, truncated, info = env.step(1)  # layer 0 is gone already
    assert info["invalid_action"] and info["removed"] == -1 and info["depth"] == 2
    assert reward == pytest.approx(-(info["cross_entropy"] - ce_before) - 0.5)
    for bad in (4, -1, 1.5, "2"):
        with pytest.raises(ValueError, match=r"expected an integer in 0\.\.3"):
            env.step(bad)
    *_, terminated, truncated, _ = env.step(0)  # the 3-step budget is spent: truncation
    assert truncated and not terminated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    v0 = make(fake_data_dir, "LayerPrune-CIFAR10-v0")
    v0.reset(seed=0)
    assert [v0.step(0)[2:4] for _ in range(3)][-1] == (True, False)  # v0: the spent budget terminates
    with pytest.raises(ValueError, match="max_layers"):
        make(fake_data_dir, max_layers=0)


def test_freezing_trains_only_the_head_after_a_removal(fake_data_dir):
    env = make(fake_data_dir, freeze_epochs=1)
    env.reset(seed=0)
    expected = env.model.without_layer(2)  # what the removal builds, before training
    env.step(3)  # removal, then a frozen step: only the head (and the step counter) change
    changed = {name for name, value in env.model.state_dict().items()
               if not torch.equal(value, expected.state_dict()[name])}
    assert changed == {"head.weight", "head.bias", "training_step"}
    after_frozen = {name: value.clone() for name, value in env.model.state_dict().items()}
    env.step(0)  # unfrozen again
    changed = {name for name, value in env.model.state_dict().items() if not torch.equal(value, after_frozen[name])}
    assert any(name.startswith("layers.") for name in changed) and "stem.0.weight" in changed


def test_masked_ppo_learns_on_the_env(fake_data_dir):
    sb3_contrib = pytest.importorskip("sb3_contrib")
    env = make(fake_data_dir)
    model = sb3_contrib.MaskablePPO("MlpPolicy", env, n_steps=6, batch_size=6, n_epochs=1, seed=0, device="cpu")
    model.learn(6)
    env.reset(seed=0)
    env.step(1)
    action, _ = model.predict(env._observation(), action_masks=env.action_masks(), deterministic=True)
    assert int(action) != 1


def test_baselines_implement_the_stated_rules(fake_data_dir):
    assert [policy.name for policy in policies_for(ID)] == ["alpha-threshold", "never-remove", "remove-every-layer"]
    layers = 4
    obs = np.zeros(4 * layers + 4, dtype=np.float32)
    obs[:layers] = [1, 1, 0, 1]
    obs[layers:2 * layers] = [0.5, 0.009, 0.0, 0.002]
    assert threshold_action(obs, layers) == 4  # layer 3 has the lowest α under 0.01; layer 2 is dead
    obs[2 * layers - 1] = 0.3
    assert threshold_action(obs, layers) == 2
    obs[layers + 1] = ALPHA_THRESHOLD
    assert threshold_action(obs, layers) == 0  # not below the threshold
    env = make(fake_data_dir)
    obs, info = env.reset(seed=0)
    policy = get_policy(ID, "alpha-threshold").make(env)
    assert policy(obs, info) == 0  # α = 0.5 everywhere at the start
    with torch.no_grad():
        env.model.layers[1].activation.gamma.fill_(-30.0)
        for _ in range(2000):
            env.model.advance()
    obs, *_, info = env.step(0)
    assert obs[3 + 1] < ALPHA_THRESHOLD and policy(obs, info) == 2
    assert get_policy(ID, "never-remove").make(env)(obs, info) == 0
    env = make(fake_data_dir, epochs=5)
    obs, info = env.reset(seed=0)
    remove_all = get_policy(ID, "remove-every-layer").make(env)
    actions = []
    for _ in range(env.max_layers + 1):
        actions.append(remove_all(obs, info))
        obs, *_, info = env.step(actions[-1])
    assert actions == [1, 2, 3, 0] and info["depth"] == 0 and not info["invalid_action"]


def test_cross_entropy_objective_is_trained(fake_data_dir):
    env = make(fake_data_dir, iterations_per_step=1)
    env.reset(seed=0)
    images, labels = env.data.train_images[:16], env.data.train_labels[:16]
    loss, logits = env._loss_and_logits(images, labels)
    assert torch.allclose(loss, F.cross_entropy(env.model(images.float() / 255), labels))


def test_compare_writes_the_family_report(fake_data_dir, tmp_path):
    from prune_gym.baselines.compare import compare

    kwargs = {key: value for key, value in cheap_kwargs(ID, fake_data_dir).items()}
    rows = compare(ID, seeds=1, out=tmp_path, env_kwargs=kwargs)
    finals = [row for row in rows if row["final"]]
    assert [row["policy"] for row in finals] == ["alpha-threshold", "never-remove", "remove-every-layer"]
    assert all(row["depth"] == 3 for row in rows if row["policy"] == "never-remove")
    assert finals[2]["depth"] == 0 and finals[2]["macs"] < finals[1]["macs"]
    assert set(finals[0]["layer_histories"]) == {0, 1, 2}
    assert len(finals[0]["layer_histories"][0]["alpha"]) == kwargs["epochs"] + 1
    for name in ("results.csv", "results.md", "pareto.png", "layer_histories.png", "layerprune.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    table = (tmp_path / "layerprune.md").read_text()
    assert "| never-remove | 1 | 3.00 |" in table


def test_the_family_report_covers_the_runs_of_an_earlier_process_after_resume_and_report_only(fake_data_dir,
                                                                                             tmp_path):
    """Regression: the report was rebuilt from the resuming process's runs only (results.csv holds
    no depth or histories), so after ``--resume`` layerprune.md listed the new policies alone."""
    from prune_gym.baselines.compare import compare, report

    kwargs = cheap_kwargs(ID, fake_data_dir)
    first = compare(ID, policies="never-remove", seeds=1, out=tmp_path, env_kwargs=kwargs)
    compare(ID, policies="never-remove,remove-every-layer", seeds=1, out=tmp_path, env_kwargs=kwargs, resume=True)
    table = (tmp_path / "layerprune.md").read_text()
    assert "| never-remove | 1 | 3.00 |" in table and "| remove-every-layer | 1 | 0.00 |" in table
    (tmp_path / "layerprune.md").unlink()
    rows = report(tmp_path, ID)
    assert "| never-remove | 1 | 3.00 |" in (tmp_path / "layerprune.md").read_text()
    stored = next(row for row in rows if row["final"] and row["policy"] == "never-remove")
    original = next(row for row in first if row["final"])
    assert stored["depth"] == 3
    # JSON keeps the histories' values exactly; its dict keys come back as strings.
    restored = {int(origin): history for origin, history in stored["layer_histories"].items()}
    assert restored == original["layer_histories"]


def test_eval_data_replaces_the_test_split_and_train_subset_cuts_training(fake_data_dir, tmp_path):
    from conftest import write_fake_npz

    held_out = write_fake_npz(tmp_path / "held-out.npz", "cifar10", train_size=8, test_size=5)
    env = make(fake_data_dir, eval_data=str(held_out), train_subset=20)
    _, info = env.reset(seed=0)
    assert len(env.data.test_labels) == 5 and len(env.data.train_labels) == 20
    expected = (env.model.eval()(env.data.test_images.float() / 255).argmax(1) == env.data.test_labels).float().mean()
    assert info["test_accuracy"] == pytest.approx(float(expected))


@pytest.mark.parametrize("env_id", ["LayerPrune-CIFAR10-Arena-v1", "AlphaBlend-CIFAR10-Arena-v1"])
def test_val_images_scores_a_fixed_prefix_of_the_same_validation_split(fake_data_dir, env_id):
    from prune_gym.envs.base import load_split_data

    env = gym.make(env_id, **{**cheap_kwargs(env_id, fake_data_dir), "val_images": 3}).unwrapped
    full = load_split_data("cifar10", str(fake_data_dir), env.settings.val_fraction, None, None, torch.device("cpu"))
    assert torch.equal(env.data.val_images, full.val_images[:3])
    assert torch.equal(env.data.val_labels, full.val_labels[:3])
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(ValueError, match="val_images"):
        gym.make(env_id, **{**cheap_kwargs(env_id, fake_data_dir), "val_images": 0})


def test_scoring_the_test_split_only_at_the_ends_changes_nothing_else(fake_data_dir):
    """The arenas' ``test_every_step=False``: the same episode (observations, rewards, accounting,
    final test figures) with the test figures ``None`` between reset and the last step."""
    episodes = {}
    for every_step in (True, False):
        env = make(fake_data_dir, epochs=3, test_every_step=every_step)
        obs, info = env.reset(seed=0)
        steps = [(obs, 0.0, info)]
        for action in (2, 0, 1):
            obs, reward, _, truncated, info = env.step(action)
            steps.append((obs, reward, info))
        assert truncated
        episodes[every_step] = steps
    for (obs, reward, info), (obs_ends, reward_ends, info_ends) in zip(episodes[True], episodes[False]):
        assert np.array_equal(obs, obs_ends) and reward == reward_ends
        assert {key: value for key, value in info.items() if not key.startswith("test_")} == \
            {key: value for key, value in info_ends.items() if not key.startswith("test_")}
    middle = [info for _, _, info in episodes[False][1:-1]]
    assert all(info["test_accuracy"] is None and info["test_loss"] is None for info in middle)
    for index in (0, -1):  # reset and the last step are scored, identically
        assert episodes[False][index][2]["test_accuracy"] == episodes[True][index][2]["test_accuracy"] is not None
    assert gym.spec("LayerPrune-CIFAR10-Arena-v1").kwargs["test_every_step"] is False
