"""Datasets as in-memory uint8 tensors, shared by every environment.

Sources, tried in this order for a dataset ``name`` and a root ``R`` (the ``data_root`` kwarg, else
``$PRUNE_GYM_DATA``, else ``~/.cache/prune_gym``):

1. ``R`` itself when it is an ``.npz`` file in the layout ``x_train, y_train, x_test, y_test``
   (images N×C×H×W uint8, labels 1-D integers) — the layout of the project's shared real-data
   subsets. Files are read without pickle and every array is checked at load time
   (:func:`load_npz`); an evaluation file (``eval_data``) may hold ``x_test, y_test`` only;
2. ``R/<name>.npz`` and ``R/<name>-subset.npz``;
3. torchvision's own folder under ``R`` (``cifar-10-batches-py``, ``cifar-100-python``, ``MNIST/raw``);
4. a torchvision download into ``R`` (only when ``download=True``).

When all fail, :class:`DatasetNotFoundError` names every path tried and the two ways to fix it.
There is never a silent fallback to synthetic data: ``name="synthetic"`` is the only way to get it.

Images stay uint8 in memory (a quarter of float32) and are normalised per batch with
:func:`normalize`, using per-channel statistics of the training images.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

DATASETS = ("cifar10", "cifar100", "mnist", "synthetic")
SPLITS = ("train", "val", "test")
DEFAULT_VAL_FRACTION = 0.1

# What a valid copy of each real dataset looks like: (channels, height, width), number of classes.
_EXPECTED_LAYOUT = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "mnist": ((1, 28, 28), 10),
}
_TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "mnist": "MNIST/raw"}


class DatasetNotFoundError(FileNotFoundError):
    """No copy of a dataset was found (and downloading was off or failed)."""


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset held in memory.

    Attributes:
        name: one of :data:`DATASETS`.
        x_train, x_test: uint8 tensors, N×C×H×W, values 0–255.
        y_train, y_test: int64 class indices.
        num_classes: number of classes.
        source: where the arrays came from (a path, or ``"synthetic(seed=…)"``).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    source: str
    _split_cache: dict = field(default_factory=dict, repr=False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def has_training_images(self) -> bool:
        """False for an evaluation file (only ``x_test``/``y_test``; see :func:`load_npz`)."""
        return len(self.y_train) > 0

    def _require_training_images(self, purpose: str) -> None:
        if not self.has_training_images:
            raise ValueError(f"{self.source} holds test images only (x_test, y_test), so it has no {purpose}. "
                             "Use it to replace a test split (eval_data, --eval-data), not as training data.")

    @cached_property
    def channel_mean(self) -> torch.Tensor:
        """Per-channel mean of the training images, on the 0–1 scale."""
        self._require_training_images("training statistics")
        return self.x_train.float().mean(dim=(0, 2, 3)) / 255.0

    @cached_property
    def channel_std(self) -> torch.Tensor:
        """Per-channel standard deviation of the training images, on the 0–1 scale."""
        self._require_training_images("training statistics")
        return (self.x_train.float() / 255.0).std(dim=(0, 2, 3)).clamp_min(1e-3)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of all four arrays: part of every weights-cache key trained on this data."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(str(tuple(array.shape)).encode())
            digest.update(array.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def split(self, split: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of ``"train"``, ``"val"`` or ``"test"``.

        The validation images are a fixed, seeded ``val_fraction`` of the training images (the same
        for every caller, run and machine) and are removed from ``"train"``; ``"test"`` is untouched.
        """
        self._check_split(split, val_fraction, SPLITS)
        if split == "test":
            return self.x_test, self.y_test
        key = (split, val_fraction)
        if key not in self._split_cache:
            indices = self._split_indices(split, val_fraction)
            self._split_cache[key] = (self.x_train[indices], self.y_train[indices])
        return self._split_cache[key]

    def split_indices(self, split: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> torch.Tensor:
        """Sorted indices into ``x_train`` of the ``"train"`` or ``"val"`` split (see :meth:`split`)."""
        self._check_split(split, val_fraction, ("train", "val"))
        return self._split_indices(split, val_fraction)

    def _check_split(self, split: str, val_fraction: float, splits: tuple[str, ...]) -> None:
        if split not in splits:
            raise ValueError(f"Unknown split {split!r}; expected {' or '.join(map(repr, splits))}.")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}.")
        if split != "test":
            self._require_training_images(f"{split} split")

    def _split_indices(self, split: str, val_fraction: float) -> torch.Tensor:
        order = torch.randperm(len(self.y_train), generator=torch.Generator().manual_seed(0))
        num_val = max(1, round(val_fraction * len(order)))
        # Sorted indices keep the images in their original order inside each split.
        indices = order[:num_val] if split == "val" else order[num_val:]
        return indices.sort().values


def normalize(images: torch.Tensor, dataset: ImageDataset) -> torch.Tensor:
    """uint8 images (N×C×H×W, 0–255) → float32, standardised with the dataset's channel statistics."""
    mean = dataset.channel_mean.to(images.device).view(1, -1, 1, 1)
    std = dataset.channel_std.to(images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def default_data_root() -> Path:
    """``$PRUNE_GYM_DATA`` if set, else ``~/.cache/prune_gym``."""
    return Path(os.environ.get("PRUNE_GYM_DATA") or Path.home() / ".cache" / "prune_gym").expanduser()


_LOADED: dict[tuple, ImageDataset] = {}


def load_dataset(name: str, data_root: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """Load a dataset into memory (once per process; later calls share the same tensors).

    Args:
        name: ``"cifar10"``, ``"cifar100"``, ``"mnist"`` or ``"synthetic"``.
        data_root: an ``.npz`` file or a directory; defaults to :func:`default_data_root`.
        download: let torchvision download into the root when no local copy is found.

    Raises:
        ValueError: unknown name, or an ``.npz`` whose images do not fit the dataset.
        DatasetNotFoundError: no copy found and downloading was off or failed.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; expected one of {DATASETS}.")
    if name == "synthetic":
        return synthetic_dataset()
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    key = (name, str(root.resolve()), download)
    if key not in _LOADED:
        _LOADED[key] = _find_or_download(name, root, download)
    return _LOADED[key]


def _find_or_download(name: str, root: Path, download: bool) -> ImageDataset:
    tried: list[str] = []
    npz_candidates = [root] if root.suffix == ".npz" else [root / f"{name}.npz", root / f"{name}-subset.npz"]
    for path in npz_candidates:
        tried.append(str(path))
        if path.is_file():
            return load_npz(path, name, require_train=True)
    if root.suffix == ".npz":
        raise DatasetNotFoundError(_not_found_message(name, tried, download_error=None))
    tried.append(str(root / _TORCHVISION_FOLDERS[name]))
    try:
        return _load_torchvision(name, root, download=False)
    except RuntimeError:
        pass  # torchvision: "Dataset not found or corrupted"
    download_error = None
    if download:
        try:
            return _load_torchvision(name, root, download=True)
        except Exception as error:  # noqa: BLE001 - any network/IO failure means "not available"
            download_error = f"{type(error).__name__}: {error}"
    raise DatasetNotFoundError(_not_found_message(name, tried, download_error, download))


def _not_found_message(name: str, tried: list[str], download_error: str | None, download: bool = False) -> str:
    lines = [f"Dataset {name!r} was not found. Paths tried:"]
    lines += [f"  - {path}" for path in tried]
    if download_error:
        lines.append(f"Download with torchvision failed: {download_error}")
    elif not download:
        lines.append("Download was not attempted (download=False).")
    lines += [
        "To fix this, either:",
        "  1. point PRUNE_GYM_DATA (or the env kwarg data_root) at an .npz file with x_train, y_train,"
        " x_test, y_test, or at a directory holding torchvision's copy of the dataset; or",
        "  2. connect to the internet once so torchvision can download it into the data root.",
    ]
    return "\n".join(lines)


_NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | os.PathLike, name: str, require_train: bool = False) -> ImageDataset:
    """Load the shared ``.npz`` layout and check that every array fits dataset ``name``.

    A file holding only ``x_test``/``y_test`` (an evaluation file, as ``--eval-data`` takes) is
    accepted unless ``require_train``; its dataset then has no training images (``x_train`` and
    ``y_train`` of length 0) and serves only the test split.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a file that is not a plain, intact ``.npz`` (it is never unpickled), lacks
            arrays, or holds arrays that do not fit ``name`` — naming the array and what was expected.
    """
    path = Path(path)
    if name not in _EXPECTED_LAYOUT:
        raise ValueError(f"{name!r} data is generated, not loaded from files: only {sorted(_EXPECTED_LAYOUT)} "
                         f"read .npz files, so {path} cannot be used with it. Use an env on one of those datasets.")
    arrays = read_npz_arrays(path)
    _check_npz_arrays_present(path, set(arrays), require_train)
    expected_shape, num_classes = _EXPECTED_LAYOUT[name]
    splits = [split for split in ("train", "test") if f"x_{split}" in arrays]
    for split in splits:
        _check_images(path, f"x_{split}", arrays[f"x_{split}"], expected_shape, name)
        _check_labels(path, f"y_{split}", arrays[f"y_{split}"], len(arrays[f"x_{split}"]), num_classes, name)
    tensors = {key: torch.from_numpy(np.ascontiguousarray(array)) for key, array in arrays.items()
               if key.startswith("x_")}
    tensors |= {key: torch.from_numpy(array.astype(np.int64)) for key, array in arrays.items() if key.startswith("y_")}
    if "x_train" not in tensors:  # an evaluation file: no training images
        tensors["x_train"] = torch.empty((0, *expected_shape), dtype=torch.uint8)
        tensors["y_train"] = torch.empty(0, dtype=torch.int64)
    return ImageDataset(name, tensors["x_train"], tensors["y_train"], tensors["x_test"], tensors["y_test"],
                        num_classes, str(path))


def read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of :data:`_NPZ_ARRAYS` that the ``.npz`` at ``path`` holds (others are ignored).

    Loaded with ``allow_pickle=False``: a data file can never run code. Anything that is not an
    intact ``.npz`` of plain arrays raises a one-line ValueError naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"No .npz file at {path}.")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise ValueError(f"{path} is empty (0 bytes); expected an .npz archive (numpy.savez) of the arrays "
                         f"{', '.join(_NPZ_ARRAYS)}.")
    if head[:2] != b"PK":  # every zip archive, and so every .npz, starts with "PK"
        kind = "a single .npy array" if head == b"\x93NUM" else "not a zip archive"
        raise ValueError(f"{path} is {kind}; expected an .npz archive (numpy.savez) of the arrays "
                         f"{', '.join(_NPZ_ARRAYS)}.")
    current = "the archive"
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {}
            for current in (key for key in _NPZ_ARRAYS if key in archive.files):
                arrays[current] = archive[current]
            return arrays
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise ValueError(f"{path}: {current} cannot be read ({error}).") from error
        # numpy's own message suggests allow_pickle; data files are never unpickled, so say what to save.
        raise ValueError(f"{path}: {current} holds Python objects, which prune-gym never loads from data files; "
                         "expected plain numeric arrays (uint8 images, integer labels).") from error
    except Exception as error:  # noqa: BLE001 - BadZipFile, EOFError, zlib.error, OSError: a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is damaged or truncated: reading {current} failed ({type(error).__name__}: "
                         f"{reason}). Write the file again (numpy.savez).") from error


def _check_npz_arrays_present(path: Path, present: set[str], require_train: bool) -> None:
    """Test arrays always; training arrays when required or when either of the pair is there."""
    required = {"x_test", "y_test"}
    if require_train or present & {"x_train", "y_train"}:
        required |= {"x_train", "y_train"}
    missing = required - present
    if not missing:
        return
    if require_train:
        expected = "x_train, y_train, x_test, y_test (training needs the training images)"
    else:
        expected = "x_test, y_test (an evaluation file) or x_train, y_train, x_test, y_test"
    raise ValueError(f"{path} lacks the arrays {sorted(missing)}; expected {expected}. It holds {sorted(present)}.")


def _check_images(path: Path, key: str, images: np.ndarray, expected_shape: tuple[int, ...], name: str) -> None:
    """uint8, N×C×H×W with (C, H, W) the dataset's, and at least one image."""
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected_shape:
        hint = " (0–1 floats convert with (x * 255).round().astype(np.uint8))" if images.dtype.kind == "f" else ""
        raise ValueError(
            f"{path}: {key} is {images.dtype} {tuple(images.shape)}, but {name} needs uint8 images "
            f"of shape (N, {', '.join(map(str, expected_shape))}){hint}. Is this the right file for {name}?"
        )
    if len(images) == 0:
        raise ValueError(f"{path}: {key} holds no images; expected at least one {name} image.")


def _check_labels(path: Path, key: str, labels: np.ndarray, num_images: int, num_classes: int, name: str) -> None:
    """A 1-D integer array, one class index in 0..num_classes-1 per image."""
    expected = f"expected {num_images} integer class indices in 0..{num_classes - 1}, shape ({num_images},)"
    if labels.ndim != 1:
        hint = " (flatten with y.reshape(-1))" if labels.ndim == 2 and labels.shape[1:] == (1,) else ""
        raise ValueError(f"{path}: {key} has shape {tuple(labels.shape)}; {expected}{hint}.")
    if labels.dtype.kind not in "iu":
        fractional = labels[np.modf(labels)[0] != 0] if labels.dtype.kind == "f" else labels[:0]
        example = f" such as {fractional[0]}" if len(fractional) else ""
        raise ValueError(f"{path}: {key} holds {labels.dtype} values{example}; {expected}. Save whole-number "
                         "labels as integers (y.astype(np.int64)).")
    if len(labels) != num_images:
        raise ValueError(f"{path}: {key} has {len(labels)} labels but x_{key[2:]} has {num_images} images; "
                         "expected one label per image.")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{path}: {key} holds labels from {low} to {high}, but {name} has {num_classes} classes; "
                         f"{expected}.")


def _load_torchvision(name: str, root: Path, download: bool) -> ImageDataset:
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST}[name]
    parts = [cls(str(root), train=train, download=download) for train in (True, False)]

    def images(part) -> torch.Tensor:
        data = torch.as_tensor(np.asarray(part.data))
        # CIFAR stores N×H×W×C, MNIST N×H×W; both become N×C×H×W.
        return data.unsqueeze(1).contiguous() if data.ndim == 3 else data.permute(0, 3, 1, 2).contiguous()

    return ImageDataset(
        name, images(parts[0]), torch.as_tensor(parts[0].targets).long(), images(parts[1]),
        torch.as_tensor(parts[1].targets).long(), _EXPECTED_LAYOUT[name][1], str(root),
    )


def synthetic_dataset(
    num_classes: int = 4,
    image_shape: tuple[int, int, int] = (3, 16, 16),
    train_size: int = 768,
    test_size: int = 256,
    seed: int = 0,
) -> ImageDataset:
    """A small, learnable image dataset for fast unit tests only (never a stand-in for real data).

    Each class is a smooth random prototype image; samples add pixel noise and a random shift, so a
    small CNN separates the classes in a few hundred steps but not in one.
    """
    key = ("synthetic", num_classes, image_shape, train_size, test_size, seed)
    if key in _LOADED:
        return _LOADED[key]
    generator = torch.Generator().manual_seed(seed)
    channels, height, width = image_shape
    coarse = torch.rand(num_classes, channels, max(2, height // 4), max(2, width // 4), generator=generator)
    prototypes = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)

    def sample(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(num_classes, (count,), generator=generator)
        shifts = torch.randint(-2, 3, (count, 2), generator=generator)
        images = torch.stack([
            torch.roll(prototypes[label], shifts=(int(dy), int(dx)), dims=(1, 2))
            for label, (dy, dx) in zip(labels.tolist(), shifts.tolist())
        ])
        images = images + 0.35 * torch.randn(images.shape, generator=generator)
        return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels

    x_train, y_train = sample(train_size)
    x_test, y_test = sample(test_size)
    dataset = ImageDataset("synthetic", x_train, y_train, x_test, y_test, num_classes, f"synthetic(seed={seed})")
    _LOADED[key] = dataset
    return dataset
