"""Pretrained weights shipped as package data (prune_gym/pretrained/): the package's files agree
with their manifests and the table, default envs load them without training, other requests and
``weights="train"`` train, and every bad file or unfitting dataset is a clear error.

Tests that break files work on temporary copies made by ``ship_backbone`` (a 3-step synthetic
backbone); the package's own files are only read."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import gymnasium as gym
import pytest
import torch
from conftest import SHARED_DATA, count_pretrain_calls, requires_shared_data, write_fake_npz

from prune_gym import pretraining, shipped
from prune_gym.cli import default_backbone_request
from prune_gym.cli import main as cli_main
from prune_gym.data import load_dataset, load_npz
from prune_gym.envs.maskoffset import MaskOffsetSettings
from prune_gym.envs.rnp import RNPSettings
from prune_gym.pretraining import accuracy_by_width, build_backbone, pretrained_backbone, ship_backbone
from prune_gym.shipped import (
    SHIPPED_CONFIGS,
    ShippedConfig,
    ShippedWeightsError,
    file_sha256,
    find_shipped,
    load_shipped,
    read_index,
    request_record,
    shipped_manifests,
    write_index,
)
from prune_gym.weights import CACHE_FORMAT, load_weights_file, state_dict_sha256

PACKAGE_MANIFESTS = {manifest["name"]: (path, manifest) for path, manifest in shipped_manifests()}
SHIPPED_ENV_IDS = [manifest["env_id"] for _, manifest in PACKAGE_MANIFESTS.values()]
TINY_CONFIG = ShippedConfig("tiny-synthetic", "RNP-Synthetic-v0")
TINY_KWARGS = {"pretrain_steps": 3, "device": "cpu"}
TINY = RNPSettings(dataset="synthetic", pretrain_steps=3).backbone_request()


def shipped_request(env_id: str):
    """``env_id``'s default backbone request, failing fast (instead of pretraining for minutes)
    when no shipped file matches it any more."""
    request = default_backbone_request(env_id)
    assert find_shipped(request) is not None, (
        f"no shipped file matches {env_id}'s default backbone request (the defaults changed?): regenerate it "
        "with `make weights` (prune-gym ship-weights)")
    return request


@pytest.fixture
def fresh_process(monkeypatch, tmp_path):
    """Forget in-process backbones and use an empty weights cache, as a new process would;
    records every cache write."""
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNE_GYM_CACHE", str(cache))
    writes: list = []
    original = pretraining.write_cache
    monkeypatch.setattr(pretraining, "write_cache", lambda *args: writes.append(args) or original(*args))
    return cache, writes


@pytest.fixture(scope="module")
def tiny_template(tmp_path_factory):
    """A shipped-weights directory holding a 3-step synthetic backbone (trained once, into the
    session's weights cache)."""
    directory = tmp_path_factory.mktemp("tiny-shipped") / "pretrained"
    with pytest.MonkeyPatch.context() as patcher:
        patcher.setattr(shipped, "SHIPPED_CONFIGS", (TINY_CONFIG,))
        manifest = ship_backbone(TINY_CONFIG, TINY, device="cpu", command="test", directory=directory)
        write_index(directory)
    return directory, manifest


@pytest.fixture
def tiny_shipped(tiny_template, monkeypatch, tmp_path):
    """A temporary copy of :func:`tiny_template`, made the package's shipped directory for this
    test, in a process that has loaded no backbone yet."""
    directory = tmp_path / "pretrained"
    shutil.copytree(tiny_template[0], directory)
    monkeypatch.setattr(shipped, "SHIPPED_CONFIGS", (TINY_CONFIG,))
    monkeypatch.setattr(shipped, "SHIPPED_DIR", directory)
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    return directory, tiny_template[1]


# -- the package's own files ------------------------------------------------------------------


def test_index_lists_the_table_and_says_which_files_are_shipped():
    rows = read_index()
    assert [(row["name"], row["env_id"]) for row in rows] == [(c.name, c.env_id) for c in SHIPPED_CONFIGS]
    for row in rows:
        present = (shipped.SHIPPED_DIR / f"{row['name']}.pt").is_file()
        assert row["shipped"] == present, f"index.json is stale for {row['name']}; run `prune-gym ship-weights`"
    listed = {f"{row['name']}.{suffix}" for row in rows if row["shipped"] for suffix in ("pt", "json")}
    assert {path.name for path in shipped.SHIPPED_DIR.iterdir()} == listed | {"index.json"}
    assert "cnn4-cifar10" in PACKAGE_MANIFESTS  # the README says RNP-CIFAR10-v0's backbone is shipped


def test_the_shipped_weights_stay_a_small_part_of_the_package():
    total = sum(manifest["file_bytes"] for _, manifest in PACKAGE_MANIFESTS.values())
    assert total < 16_000_000, f"the shipped weights total {total / 1e6:.1f} MB"


@pytest.mark.parametrize("name", sorted(PACKAGE_MANIFESTS))
def test_every_shipped_file_matches_its_manifest_and_its_envs_default_request(name):
    path, manifest = PACKAGE_MANIFESTS[name]
    weights = path.parent / manifest["weights_file"]
    assert file_sha256(weights) == manifest["file_sha256"] and weights.stat().st_size == manifest["file_bytes"]
    payload = load_weights_file(weights)  # verifies the tensors against the file's own checksum
    assert payload["sha256"] == manifest["weights_sha256"] and payload["key"] == manifest["cache_key"]
    assert {tensor.dtype for tensor in payload["state_dict"].values()} <= {torch.float32, torch.int64}
    # float32, so a loaded file scores exactly what its manifest says; cnn8's 1.8 M weights make
    # the largest file (7.4 MB). The package's whole set is capped below.
    assert manifest["file_bytes"] < 8_000_000
    assert manifest["cache_format"] == CACHE_FORMAT, f"{name} has an old cache format: run `make weights`"
    assert manifest["request"] == request_record(default_backbone_request(manifest["env_id"])), (
        f"{manifest['env_id']}'s default backbone request changed since {name} was shipped: "
        f"regenerate it with `prune-gym ship-weights --only {name}` (or `make weights`)")
    assert manifest["command"].startswith("prune-gym ship-weights") and manifest["torch_version"]
    assert manifest["training_data"]["name"] == manifest["request"]["dataset"]
    assert len(manifest["training_data"]["sha256"]) == 64
    for evaluation in manifest["test_accuracy"]:
        assert list(evaluation["accuracy_by_groups"]) == [str(g) for g in range(1, manifest["request"]["k"] + 1)]


@pytest.mark.parametrize("env_id", SHIPPED_ENV_IDS)
def test_default_backbone_loads_the_shipped_file_with_any_copy_without_training(env_id, fresh_process,
                                                                                fake_data_dir, monkeypatch):
    cache, writes = fresh_process
    calls = count_pretrain_calls(monkeypatch)
    request = shipped_request(env_id)
    # A 64-image stand-in: another copy of the dataset than the one the weights were trained on.
    model, _, dataset = pretrained_backbone(request, fake_data_dir, "cpu")
    _, manifest = find_shipped(request)
    assert calls == [] and writes == [] and not cache.exists()
    assert dataset.source == str(fake_data_dir / f"{request.dataset}.npz")
    assert state_dict_sha256(model.state_dict()) == manifest["weights_sha256"]


def test_default_env_steps_on_the_shipped_backbone(fresh_process, fake_data_dir, monkeypatch):
    cache, writes = fresh_process
    calls = count_pretrain_calls(monkeypatch)
    shipped_request("RNP-CIFAR10-v0")
    env = gym.make("RNP-CIFAR10-v0", data_root=str(fake_data_dir), device="cpu")
    env.reset(seed=0)
    env.step(0)
    assert calls == [] and writes == [] and not cache.exists()
    shipped_sha = PACKAGE_MANIFESTS["cnn4-cifar10"][1]["weights_sha256"]
    assert state_dict_sha256(env.unwrapped._core.backbone.state_dict()) == shipped_sha
    assert env.unwrapped.pretrain_metrics == PACKAGE_MANIFESTS["cnn4-cifar10"][1]["pretrain_metrics"]


@requires_shared_data
def test_shipped_cifar10_backbone_reproduces_its_manifests_subset_accuracy(fresh_process):
    """On the exact-pixel subset (another copy than cifar10.npz) the loaded weights score exactly
    what the manifest records."""
    _, manifest = PACKAGE_MANIFESTS["cnn4-cifar10"]
    subset = SHARED_DATA / "cifar10-subset.npz"
    recorded = next(entry for entry in manifest["test_accuracy"] if entry["file"] == subset.name)
    assert recorded["sha256"] == file_sha256(subset)
    model, _, dataset = pretrained_backbone(shipped_request("RNP-CIFAR10-v0"), subset, "cpu")
    measured = accuracy_by_width(model, dataset, dataset, torch.device("cpu"))
    assert measured["accuracy_by_groups"] == recorded["accuracy_by_groups"]


def test_other_kwargs_are_not_shipped_and_train_as_before(fresh_process, fake_data_dir, monkeypatch):
    default = RNPSettings()
    shipped_request("RNP-CIFAR10-v0")
    for changed in ({"k": 2}, {"dropout": 0.1}, {"backbone_seed": 1}, {"pretrain_steps": 2999},
                    {"val_fraction": 0.2}, {"backbone": "cnn6"}, {"dataset": "cifar100"},
                    {"pretrain_precision": "bf16"}, {"pretrain_lr": 0.2}, {"pretrain_cutout": 8},
                    {"pretrain_batch_size": 256}):
        assert find_shipped(replace(default, **changed).backbone_request()) is None, changed
    cache, writes = fresh_process
    calls = count_pretrain_calls(monkeypatch)
    gym.make("RNP-CIFAR10-v0", data_root=str(fake_data_dir), device="cpu", pretrain_steps=2).reset(seed=0)
    assert len(calls) == 1 and len(writes) == 1 and any(cache.iterdir())


def test_rnp_pretrain_batch_size_reaches_the_budget_and_is_validated():
    assert RNPSettings(pretrain_batch_size=128).backbone_request().budget.batch_size == 128
    assert RNPSettings().backbone_request() == shipped_request("RNP-CIFAR10-v0")  # 512: the shipped key
    with pytest.raises(ValueError, match="pretrain_batch_size"):
        RNPSettings(pretrain_batch_size=0)


def test_maskoffset_cutout_is_not_the_shipped_resnet():
    default = MaskOffsetSettings()
    assert find_shipped(default.backbone_request()) is not None
    assert find_shipped(replace(default, pretrain_cutout=16).backbone_request()) is None


# -- the mechanism, on a temporary shipped directory ------------------------------------------


def test_auto_uses_the_shipped_file_and_weights_train_opts_out(fresh_process, tiny_shipped, monkeypatch):
    directory, manifest = tiny_shipped
    _, writes = fresh_process
    calls = count_pretrain_calls(monkeypatch)
    env = gym.make("RNP-Synthetic-v0", **TINY_KWARGS)
    env.reset(seed=0)
    assert calls == [] and writes == []
    assert state_dict_sha256(env.unwrapped._core.backbone.state_dict()) == manifest["weights_sha256"]
    gym.make("RNP-Synthetic-v0", weights="train", **TINY_KWARGS).reset(seed=0)
    assert len(calls) == 1 and len(writes) == 1  # trained on the local copy and cached as before
    with pytest.raises(ValueError, match="weights must be one of"):
        gym.make("RNP-Synthetic-v0", weights="download", **TINY_KWARGS)


def test_weights_shipped_without_a_shipped_configuration_is_an_error(tiny_shipped):
    with pytest.raises(ShippedWeightsError, match=r"(?s)No weights are shipped.*tiny-synthetic.*weights=\"auto\""):
        pretrained_backbone(replace(TINY, k=2), device="cpu", weights="shipped")
    assert pretrained_backbone(TINY, device="cpu", weights="shipped")[0] is not None


def _break(directory, damage):
    weights, manifest_path = directory / f"{TINY_CONFIG.name}.pt", directory / f"{TINY_CONFIG.name}.json"
    manifest = json.loads(manifest_path.read_text())
    if damage in ("flipped bytes", "flipped bytes, manifest rehashed"):
        data = bytearray(weights.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(byte ^ 0xFF for byte in data[middle:middle + 64])
        weights.write_bytes(bytes(data))
        if damage.endswith("rehashed"):  # a manifest regenerated by hand from a damaged file
            manifest["file_sha256"] = file_sha256(weights)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "missing":
        weights.unlink()
    elif damage == "manifest names other tensors":
        manifest["weights_sha256"] = "0" * 64
    elif damage == "manifest names another file":
        manifest["file_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", ["flipped bytes", "flipped bytes, manifest rehashed", "truncated", "missing",
                                    "manifest names other tensors", "manifest names another file"])
def test_a_bad_shipped_file_is_a_clear_error_never_a_silent_model(tiny_shipped, monkeypatch, damage):
    directory, _ = tiny_shipped
    _break(directory, damage)
    calls = count_pretrain_calls(monkeypatch)
    with pytest.raises(ShippedWeightsError) as raised:
        gym.make("RNP-Synthetic-v0", **TINY_KWARGS).reset(seed=0)
    message = str(raised.value)
    assert f"{TINY_CONFIG.name}.pt" in message and f"prune-gym ship-weights --only {TINY_CONFIG.name}" in message
    assert 'weights="train"' in message and calls == []
    # The documented way out (here the session's cache holds that backbone, so it loads from there).
    gym.make("RNP-Synthetic-v0", weights="train", **TINY_KWARGS).reset(seed=0)


@pytest.mark.parametrize("layout", ["cifar100", "mnist"])
def test_data_that_does_not_fit_the_shipped_head_is_a_clear_error(fresh_process, monkeypatch, tmp_path, layout):
    """A "cifar10" copy with 100 classes or MNIST's image shape (the data loader refuses such
    files, so a stand-in is injected) is refused by the shipped file's own check."""
    wrong = load_npz(write_fake_npz(tmp_path / f"{layout}.npz", layout), layout)
    monkeypatch.setattr(pretraining, "load_dataset", lambda name, root=None: wrong)
    expected = r"100 classes" if layout == "cifar100" else r"shape \(1, 28, 28\)"
    with pytest.raises(ShippedWeightsError, match=rf"cnn4-cifar10.*{expected}.*weights=\"train\""):
        pretrained_backbone(shipped_request("RNP-CIFAR10-v0"), device="cpu")
    path, manifest = PACKAGE_MANIFESTS["cnn4-cifar10"]
    fits = load_dataset("synthetic")
    with pytest.raises(ShippedWeightsError, match="10 classes"):
        load_shipped(path, manifest, build_backbone(TINY, fits), wrong)


def test_ship_weights_command_writes_files_index_and_a_manifest_that_loads(monkeypatch, tmp_path, capsys):
    out = tmp_path / "pretrained"
    monkeypatch.setattr(shipped, "SHIPPED_CONFIGS", (TINY_CONFIG, ShippedConfig("not-yet", "RNP-MNIST-v0")))
    monkeypatch.setattr("prune_gym.cli.default_backbone_request", lambda env_id: TINY)
    with pytest.raises(SystemExit, match="unknown configuration.*tiny-synthetic, not-yet"):
        cli_main(["ship-weights", "--only", "nope", "--out", str(out)])
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    cli_main(["ship-weights", "--only", TINY_CONFIG.name, "--out", str(out), "--device", "cpu"])
    assert f"wrote {out / 'index.json'}" in capsys.readouterr().out
    assert [(row["name"], row["shipped"]) for row in read_index(out)] == [(TINY_CONFIG.name, True), ("not-yet", False)]
    manifest = json.loads((out / f"{TINY_CONFIG.name}.json").read_text())
    assert manifest["command"] == f"prune-gym ship-weights --only {TINY_CONFIG.name} --out {out} --device cpu"
    assert manifest["request"] == request_record(TINY) and manifest["file_sha256"] == file_sha256(
        out / f"{TINY_CONFIG.name}.pt")
    assert not list(out.glob("*.tmp"))
    cli_main(["ship-weights", "--list", "--out", str(out)])
    listing = capsys.readouterr().out
    assert "tiny-synthetic" in listing and "shipped (" in listing and "not shipped" in listing
    # A copy of the directory elsewhere (an installed package) is self-contained.
    installed = tmp_path / "site-packages" / "pretrained"
    shutil.copytree(out, installed)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", installed)
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    calls = count_pretrain_calls(monkeypatch)
    model, _, _ = pretrained_backbone(TINY, device="cpu")
    assert calls == [] and state_dict_sha256(model.state_dict()) == manifest["weights_sha256"]


@pytest.mark.parametrize("env_id", ["AlphaBlend-CIFAR10-v1", "AlphaBlend-CIFAR10-v0"])
def test_alphablend_starts_from_the_rnp_cifar10_backbone(env_id):
    """One pretrained network (one shipped file, one cache file) serves both families."""
    assert default_backbone_request(env_id) == default_backbone_request("RNP-CIFAR10-v0")
