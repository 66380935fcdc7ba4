"""Issue 12, data side: damaged or unwritable weights caches, test-only and malformed ``.npz``
files, impossible devices and counts, and progress without a terminal. Each test failed before
the fix it guards."""

from __future__ import annotations

import logging
import os
import stat
import struct
import tempfile
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import count_pretrain_calls, write_fake_npz

from prune_gym import pretraining, progress, weights
from prune_gym.cli import main as cli_main
from prune_gym.data import load_dataset, load_npz
from prune_gym.evaluation import rnp_images
from prune_gym.pretraining import BackboneRequest, PretrainBudget, cache_key, pretrained_backbone
from prune_gym.training import resolve_device, train_loop
from prune_gym.weights import (
    WeightsCacheWarning,
    WeightsFileError,
    atomic_torch_save,
    cache_path,
    load_weights_file,
    weights_payload,
)

TINY = BackboneRequest("synthetic", budget=PretrainBudget(steps=3, eval_every=3))


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path) -> Path:
    """An empty cache, no backbones in memory, and HOME / the temp dir inside ``tmp_path`` so the
    fallback locations never touch the real ones."""
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    monkeypatch.setenv("PRUNE_GYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path / "cache"




def flip_bytes_in_largest_tensor(path: Path, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of the largest tensor record of a torch zip file
    (what a bad disk sector or a partial copy does; the zip CRC is not checked by torch.load)."""
    with zipfile.ZipFile(path) as archive:
        record = max((info for info in archive.infolist() if "/data/" in info.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[record.header_offset + 26: record.header_offset + 30])
    start = record.header_offset + 30 + name_length + extra_length + record.file_size // 2
    for offset in range(start, start + count):
        raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


# ----------------------------------------------------------------------------------------------
# 1. Weights cache integrity
# ----------------------------------------------------------------------------------------------


def test_flipped_bytes_in_a_cached_tensor_are_reported_and_retrained(fresh_cache, monkeypatch):
    trained, _, dataset = pretrained_backbone(TINY, device="cpu")
    path = cache_path(cache_key(TINY, dataset))
    flip_bytes_in_largest_tensor(path)
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    calls = count_pretrain_calls(monkeypatch)
    with pytest.warns(WeightsCacheWarning, match=rf"{path}.*damaged.*SHA-256"):
        retrained, _, _ = pretrained_backbone(TINY, device="cpu")
    assert len(calls) == 1
    for name, tensor in trained.state_dict().items():
        assert torch.equal(tensor, retrained.state_dict()[name]), name  # the damaged weights were not used
    with warnings.catch_warnings():  # the rewritten file verifies again
        warnings.simplefilter("error", WeightsCacheWarning)
        monkeypatch.setattr(pretraining, "_PRETRAINED", {})
        pretrained_backbone(TINY, device="cpu")
    assert len(calls) == 1


def test_a_weights_file_that_fails_its_checksum_is_a_clear_error(tmp_path):
    state = torch.nn.Linear(64, 64).state_dict()
    path = tmp_path / "shipped.pt"
    atomic_torch_save(weights_payload(state, note="shipped"), path)
    assert load_weights_file(path)["note"] == "shipped"
    flip_bytes_in_largest_tensor(path)
    with pytest.raises(WeightsFileError, match=rf"{path} is damaged: its tensors hash to SHA-256"):
        load_weights_file(path)
    torch.save({"state_dict": state}, path)  # an unverifiable file is refused, not trusted
    with pytest.raises(WeightsFileError, match="records no SHA-256 checksum"):
        load_weights_file(path)
    path.write_bytes(b"garbage")
    with pytest.raises(WeightsFileError, match="not a readable weights file"):
        load_weights_file(path)


# ----------------------------------------------------------------------------------------------
# 2. Read-only or shared cache
# ----------------------------------------------------------------------------------------------


def test_an_unwritable_cache_falls_back_with_a_warning_and_later_processes_find_the_file(
        fresh_cache, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # A cache "directory" below a regular file cannot be written, even by root.
    monkeypatch.setenv("PRUNE_GYM_CACHE", str(blocker / "cache"))
    calls = count_pretrain_calls(monkeypatch)
    with pytest.warns(WeightsCacheWarning, match="instead") as caught:
        model, _, dataset = pretrained_backbone(TINY, device="cpu")
    fallback = tmp_path / "home" / ".cache" / "prune_gym" / "weights" / cache_path(cache_key(TINY, dataset)).name
    assert str(fallback) in str(caught[0].message) and fallback.is_file() and len(calls) == 1
    # The resumable progress went to the fallback too, not lost to the read-only directory.
    assert not any("training checkpoint" in str(warning.message) for warning in caught)
    monkeypatch.setattr(pretraining, "_PRETRAINED", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsCacheWarning)
        again, _, _ = pretrained_backbone(TINY, device="cpu")
    assert len(calls) == 1  # found in the fallback, not retrained
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_with_no_writable_location_the_weights_stay_in_memory(fresh_cache, monkeypatch):
    def refuse(payload, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(weights, "atomic_torch_save", refuse)
    calls = count_pretrain_calls(monkeypatch)
    with pytest.warns(WeightsCacheWarning, match="stay in memory for this process"):
        first, _, _ = pretrained_backbone(TINY, device="cpu")
    second, _, _ = pretrained_backbone(TINY, device="cpu")
    assert second is first and len(calls) == 1


def test_cache_files_get_a_plain_files_mode_not_mkstemps_private_one(fresh_cache):
    old_umask = os.umask(0o002)  # a shared cluster directory's usual umask
    try:
        _, _, dataset = pretrained_backbone(TINY, device="cpu")
    finally:
        os.umask(old_umask)
    mode = stat.S_IMODE(cache_path(cache_key(TINY, dataset)).stat().st_mode)
    assert mode == 0o664


def test_a_temp_fallback_directory_others_can_write_to_is_not_used(fresh_cache, tmp_path):
    private = weights.private_temp_dir()
    assert private is not None and stat.S_IMODE(private.stat().st_mode) == 0o700
    private.chmod(0o777)  # e.g. planted by another user: files in it cannot be trusted
    assert weights.private_temp_dir() is None
    assert all(tmp_path / "tmp" not in directory.parents for directory in weights.fallback_cache_dirs())


# ----------------------------------------------------------------------------------------------
# 3. Test-only evaluation files
# ----------------------------------------------------------------------------------------------


def write_test_only_npz(path: Path, dataset: str = "cifar10", size: int = 12) -> Path:
    full = write_fake_npz(path.with_name("full-" + path.name), dataset, test_size=size)
    with np.load(full) as arrays:
        np.savez(path, x_test=arrays["x_test"], y_test=arrays["y_test"])
    return path


def test_a_test_only_npz_loads_for_evaluation(tmp_path, fake_data_dir):
    path = write_test_only_npz(tmp_path / "eval.npz")
    held_out = load_npz(path, "cifar10")
    assert held_out.x_test.shape == (12, 3, 32, 32) and not held_out.has_training_images
    env = types.SimpleNamespace(dataset=load_dataset("cifar10", fake_data_dir),
                                settings=types.SimpleNamespace(val_fraction=0.1))
    images, labels, source = rnp_images(env, "test", str(path))
    assert torch.equal(images, held_out.x_test) and torch.equal(labels, held_out.y_test) and str(path) in source


def test_a_test_only_npz_is_refused_as_training_data(tmp_path):
    path = write_test_only_npz(tmp_path / "eval.npz")
    with pytest.raises(ValueError, match=r"lacks the arrays \['x_train', 'y_train'\].*training needs"):
        load_dataset("cifar10", path)
    with pytest.raises(ValueError, match="holds test images only"):
        load_npz(path, "cifar10").split("train")


def test_eval_data_for_a_synthetic_env_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="'synthetic' data is generated"):
        load_npz(write_test_only_npz(tmp_path / "eval.npz"), "synthetic")


# ----------------------------------------------------------------------------------------------
# 4. Bad arrays and damaged files
# ----------------------------------------------------------------------------------------------

_IMAGES = np.zeros((4, 1, 28, 28), np.uint8)
_LABELS = np.arange(4)


@pytest.mark.parametrize(("arrays", "expected"), [
    ({"y_test": _LABELS.reshape(4, 1)}, r"y_test has shape \(4, 1\); expected 4 integer class indices.*reshape"),
    ({"y_test": np.array([0, 1.5, 2, 3])}, r"y_test holds float64 values such as 1.5; expected"),
    ({"y_test": _LABELS.astype(np.float32)}, r"y_test holds float32 values; expected .*astype\(np.int64\)"),
    ({"y_test": np.array([0, -1, 2, 3])}, r"y_test holds labels from -1 to 3, but mnist has 10 classes"),
    ({"y_test": np.array([0, 1, 2, 10])}, r"y_test holds labels from 0 to 10, .* in 0\.\.9"),
    ({"x_test": _IMAGES[:0], "y_test": _LABELS[:0]}, r"x_test holds no images"),
    ({"y_test": _LABELS[:3]}, r"y_test has 3 labels but x_test has 4 images"),
    ({"x_test": _IMAGES.astype(np.float32)}, r"x_test is float32 .* needs uint8 images"),
    ({"x_train": _IMAGES, "y_train": _LABELS.reshape(2, 2)}, r"y_train has shape \(2, 2\)"),
    ({"x_train": _IMAGES}, r"lacks the arrays \['y_train'\]"),
], ids=["column-labels", "fractional", "float", "negative", "too-large", "empty", "count-mismatch",
        "float-images", "train-labels-2d", "images-without-labels"])
def test_bad_arrays_are_refused_at_load_time_with_their_name(tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **{"x_test": _IMAGES, "y_test": _LABELS, **arrays})
    with pytest.raises(ValueError, match=expected) as caught:
        load_npz(path, "mnist")
    assert str(path) in str(caught.value)


def _truncated(path: Path) -> None:
    np.savez(path, x_test=_IMAGES, y_test=_LABELS)
    path.write_bytes(path.read_bytes()[:500])


def _bad_crc(path: Path) -> None:
    np.savez(path, x_test=_IMAGES, y_test=_LABELS)
    raw = bytearray(path.read_bytes())
    for offset in range(300, 364):  # inside x_test's data
        raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def _npy_named_npz(path: Path) -> None:
    with open(path, "wb") as handle:
        np.save(handle, _IMAGES)


@pytest.mark.parametrize(("write", "expected"), [
    (lambda path: path.write_bytes(b""), "is empty (0 bytes)"),
    (lambda path: path.write_bytes(b"\x80\x04garbage pickle or text" * 8), "is not a zip archive"),
    (_truncated, "is damaged or truncated"),
    (_bad_crc, "is damaged or truncated: reading x_test failed"),
    (_npy_named_npz, "is a single .npy array"),
    (lambda path: np.savez(path, x_test=np.array([{"a": 1}], dtype=object), y_test=_LABELS),
     "x_test holds Python objects"),
], ids=["zero-byte", "garbage", "truncated", "bad-crc", "npy", "object-array"])
def test_damaged_npz_files_are_one_line_errors_naming_the_file(tmp_path, write, expected):
    path = tmp_path / "data.npz"
    write(path)
    with pytest.raises(ValueError) as caught:
        load_npz(path, "mnist")
    message = str(caught.value)
    assert type(caught.value) is ValueError and expected in message and str(path) in message
    assert "\n" not in message and "allow_pickle" not in message


# ----------------------------------------------------------------------------------------------
# 6. Clear errors instead of tracebacks
# ----------------------------------------------------------------------------------------------


def test_cuda_without_a_cuda_device_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"no CUDA device; use 'cpu' or 'auto'"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="Unknown device 'gpu'"):
        resolve_device("gpu")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(SystemExit) as caught:
        cli_main(["bench", "RNP-Synthetic-v0", "--episodes", "1", "--num-envs", "2",
                  "--env-kwargs", "device=cuda", "pretrain_steps=2"])
    assert str(caught.value) == "prune-gym: error: device='cuda', but there is no CUDA device; use 'cpu' or 'auto'."


@pytest.mark.parametrize(("flag", "value"), [("--episodes", "0"), ("--num-envs", "0"), ("--num-envs", "-4")])
def test_bench_with_nothing_to_time_is_a_clear_error(flag, value):
    with pytest.raises(SystemExit) as caught:
        cli_main(["bench", "RNP-Synthetic-v0", flag, value, "--env-kwargs", "pretrain_steps=2", "device=cpu"])
    assert f"({flag}) must be an integer ≥ 1" in str(caught.value) and f"Got {value}." in str(caught.value)


# ----------------------------------------------------------------------------------------------
# 7. Progress without a terminal
# ----------------------------------------------------------------------------------------------


def test_progress_lines_come_at_intervals_with_step_total_elapsed_and_eta():
    now = [0.0]
    lines: list[str] = []
    bar = progress.ProgressLines(range(10), 10, "pretrain", interval_s=30.0, clock=lambda: now[0],
                                 emit=lines.append)
    for _ in bar:
        now[0] += 10.0  # every step takes 10 s
        bar.set_postfix(loss="0.500")
    bar.close()
    assert lines == [
        "pretrain: 3/10 steps (30 %), 30 s elapsed, ETA 1 min 10 s, loss=0.500",
        "pretrain: 6/10 steps (60 %), 1 min 00 s elapsed, ETA 40 s, loss=0.500",
        "pretrain: 9/10 steps (90 %), 1 min 30 s elapsed, ETA 10 s, loss=0.500",
        "pretrain: 10/10 steps (100 %), 1 min 40 s elapsed, done, loss=0.500",
    ]


def test_a_loop_shorter_than_the_interval_prints_nothing():
    lines: list[str] = []
    bar = progress.ProgressLines(range(5), 5, "env step", interval_s=30.0, clock=lambda: 0.0, emit=lines.append)
    assert list(bar) == [0, 1, 2, 3, 4]
    bar.close()
    assert lines == []


def test_train_loop_reports_progress_lines_when_not_on_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr(progress, "is_interactive", lambda stream=None: False)
    monkeypatch.setattr(progress, "DEFAULT_INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO, logger="prune_gym.progress")
    model = torch.nn.Linear(1, 1)
    train_loop(model, lambda step: 0.25, lambda: {"score": 0.5}, steps=4, eval_every=2, description="pretrain tiny")
    lines = [record.getMessage() for record in caplog.records if record.name == "prune_gym.progress"]
    assert lines[0].startswith("pretrain tiny: 1/4 steps (25 %)") and "elapsed" in lines[0] and "ETA" in lines[0]
    assert lines[-1].startswith("pretrain tiny: 4/4 steps (100 %)") and "done" in lines[-1]
