import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data, write_fake_npz

from prune_gym import data
from prune_gym.data import DatasetNotFoundError, load_dataset, load_npz, normalize, synthetic_dataset


def test_npz_file_and_directory_roots(tmp_path):
    path = write_fake_npz(tmp_path / "cifar10-subset.npz", "cifar10")
    from_file = load_dataset("cifar10", path)
    from_dir = load_dataset("cifar10", tmp_path)
    assert from_file.x_train.dtype == torch.uint8 and from_file.image_shape == (3, 32, 32)
    assert torch.equal(from_file.x_train, from_dir.x_train)
    assert load_dataset("cifar10", path) is from_file  # loaded once per process


def test_npz_of_the_wrong_dataset_is_rejected(tmp_path):
    path = write_fake_npz(tmp_path / "m.npz", "mnist")
    with pytest.raises(ValueError, match=r"cifar10 needs uint8 images of shape \(N, 3, 32, 32\)"):
        load_npz(path, "cifar10")


def test_npz_with_missing_arrays_is_rejected(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 1, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="lacks the arrays"):
        load_npz(tmp_path / "bad.npz", "mnist")


def test_missing_data_offline_names_paths_and_fixes(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", tmp_path / "nowhere", download=False)
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / "mnist.npz") in message
    assert str(tmp_path / "nowhere" / "MNIST/raw") in message
    assert "PRUNE_GYM_DATA" in message and "connect to the internet" in message


def test_failed_download_is_reported_not_replaced_by_synthetic(tmp_path, monkeypatch):
    def offline(name, root, download):
        if download:
            raise OSError("network unreachable")
        raise RuntimeError("Dataset not found or corrupted.")

    monkeypatch.setattr(data, "_load_torchvision", offline)
    with pytest.raises(DatasetNotFoundError, match="network unreachable"):
        load_dataset("cifar100", tmp_path)


def test_environment_variable_sets_the_default_root(tmp_path, monkeypatch):
    write_fake_npz(tmp_path / "mnist.npz", "mnist")
    monkeypatch.setenv("PRUNE_GYM_DATA", str(tmp_path))
    assert load_dataset("mnist").source == str(tmp_path / "mnist.npz")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="expected one of"):
        load_dataset("imagenet")


def test_splits_are_deterministic_disjoint_and_complete():
    dataset = synthetic_dataset()
    x_train, y_train = dataset.split("train")
    x_val, y_val = dataset.split("val")
    assert len(y_val) == round(0.1 * len(dataset.y_train))
    assert len(y_train) + len(y_val) == len(dataset.y_train)
    rows = {tuple(image.flatten().tolist()) for image in x_val}
    assert not any(tuple(image.flatten().tolist()) in rows for image in x_train)
    assert torch.equal(dataset.split("val")[0], x_val)
    assert dataset.split("test")[0] is dataset.x_test
    with pytest.raises(ValueError, match="Unknown split"):
        dataset.split("validation")


def test_split_indices_name_the_rows_each_split_holds():
    dataset = synthetic_dataset()
    for split in ("train", "val"):
        indices = dataset.split_indices(split, 0.2)
        assert torch.equal(dataset.x_train[indices], dataset.split(split, 0.2)[0])
    with pytest.raises(ValueError, match="'train' or 'val'"):
        dataset.split_indices("test")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        dataset.split_indices("val", 1.5)


def test_normalize_standardises_each_channel():
    dataset = synthetic_dataset()
    images = normalize(dataset.x_train, dataset)
    assert images.dtype == torch.float32
    assert torch.allclose(images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(images.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)


def test_synthetic_is_reproducible_and_separable():
    first, second = synthetic_dataset(seed=5), synthetic_dataset(seed=5)
    assert torch.equal(first.x_train, second.x_train)
    assert len(first.fingerprint) == 64


@requires_shared_data
@pytest.mark.parametrize(("name", "source", "train", "test", "shape"), [
    ("cifar10", "cifar10-subset.npz", 5085, 517, (3, 32, 32)), ("mnist", "mnist-subset.npz", 3678, 2678, (1, 28, 28)),
    # A directory picks the full copy (<name>.npz) before the subset.
    ("cifar10", "", 50_000, 7_500, (3, 32, 32)), ("mnist", "", 3678, 2678, (1, 28, 28))])
def test_real_data_loads_from_the_shared_directory(name, source, train, test, shape):
    if source == "" and name == "cifar10" and not (SHARED_DATA / "cifar10.npz").is_file():
        pytest.skip(f"the full CIFAR-10 copy is not at {SHARED_DATA / 'cifar10.npz'}")
    dataset = load_dataset(name, SHARED_DATA / source if source else SHARED_DATA)
    assert (len(dataset.y_train), len(dataset.y_test), dataset.image_shape) == (train, test, shape)
    assert dataset.num_classes == 10 and int(dataset.y_train.max()) == 9
