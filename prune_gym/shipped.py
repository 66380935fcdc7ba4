"""Pretrained backbones shipped with the package (``prune_gym/pretrained/``), so default envs start in seconds.

The directory holds, per shipped configuration ``NAME`` (a row of :data:`SHIPPED_CONFIGS`):

* ``NAME.pt`` — a weights file in the cache's own layout (:func:`prune_gym.weights.weights_payload`:
  float32 state dict, its :func:`~prune_gym.weights.state_dict_sha256`, the cache key, the
  pretraining metrics), read only through :func:`~prune_gym.weights.load_weights_file`;
* ``NAME.json`` — its manifest: the command that produced it, the backbone request (dataset
  name, architecture, ``k``, dropout, seed, validation fraction, budget), the training data's
  file name and SHA-256, the SHA-256 of the weights (tensors and file bytes), test accuracy per
  width on every copy of the dataset found beside the training file, torch version and date;
* ``index.json`` — every row of the table and whether its files are shipped.

:func:`find_shipped` matches a :class:`~prune_gym.pretraining.BackboneRequest` against the shipped
manifests by the request alone — the dataset's *name*, not its fingerprint — so the weights serve
any copy of that dataset (torchvision's folders or an ``.npz``). :func:`load_shipped` loads them
only when the file, the manifest and the dataset agree, and raises :class:`ShippedWeightsError`
(naming the file, what was expected and how to fix it) otherwise: a shipped file is never
silently replaced by something else, nor used for data it does not fit.

``prune-gym ship-weights`` (:func:`write_shipped`, :func:`write_index`) regenerates the files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prune_gym.weights import (
    CACHE_FORMAT,
    WeightsFileError,
    atomic_torch_save,
    atomic_write,
    load_weights_file,
    weights_payload,
)

if TYPE_CHECKING:
    from torch import nn

    from prune_gym.data import ImageDataset
    from prune_gym.pretraining import BackboneRequest

# Where shipped files live; tests point this at a temporary copy.
SHIPPED_DIR = Path(__file__).resolve().parent / "pretrained"
INDEX_FILE = "index.json"
MANIFEST_FORMAT = 1

# ``weights=`` of pretrained_backbone and of the envs that take a pretrained backbone:
# "auto" uses a shipped file when one matches the request and else the cache (training on a
# miss); "shipped" insists on a shipped file (an error when none matches); "train" never uses
# one, so the backbone is trained on (or cached from) the user's own copy of the data.
WEIGHTS_MODES = ("auto", "shipped", "train")


@dataclass(frozen=True)
class ShippedConfig:
    """A configuration the package ships weights for: the default backbone of ``env_id``."""

    name: str  # file stem in SHIPPED_DIR
    env_id: str  # the registered id whose default backbone request these weights are


# The one table: every registered CIFAR-10 and MNIST RNP configuration and the MaskOffset ResNets.
# AlphaBlend's backbone is RNP-CIFAR10-v0's (the same request), so "cnn4-cifar10" serves both
# families. A row whose files are absent falls back to the weights cache; `index.json` says which
# rows are shipped.
SHIPPED_CONFIGS: tuple[ShippedConfig, ...] = (
    ShippedConfig("cnn4-cifar10", "RNP-CIFAR10-v0"),
    ShippedConfig("cnn6-cifar10", "RNP-CIFAR10-CNN6-v0"),
    ShippedConfig("cnn8-cifar10", "RNP-CIFAR10-CNN8-v0"),
    ShippedConfig("cnn4-mnist", "RNP-MNIST-v0"),
    ShippedConfig("resnet20-cifar10", "MaskOffset-CIFAR10-v0"),
    ShippedConfig("resnet56-cifar10", "MaskOffset-CIFAR10-ResNet56-v0"),
)


class ShippedWeightsError(WeightsFileError):
    """A shipped weights file cannot be used: damaged, disagreeing with its manifest, or not
    fitting the dataset. Never retrained silently: reinstall, regenerate, or pass ``weights="train"``."""


def _fix_hint(name: str) -> str:
    return (f"To fix: reinstall prune-gym (pip install --force-reinstall prune-gym), or regenerate the file "
            f"with `prune-gym ship-weights --only {name}`; or pass weights=\"train\" to train the backbone on "
            "your own copy of the data instead.")


def request_record(request: BackboneRequest) -> dict[str, Any]:
    """``request`` as the plain JSON data a manifest stores and is matched on (the budget as
    :meth:`~prune_gym.pretraining.PretrainBudget.record` writes it)."""
    return json.loads(json.dumps({**asdict(request), "budget": request.budget.record()}))


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Reading: index, manifests, matching and loading
# ----------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ShippedWeightsError(f"The shipped {what} {path} is missing. The installed package is incomplete; "
                                  "reinstall prune-gym, or regenerate it with `prune-gym ship-weights`.") from None
    except (OSError, ValueError) as error:
        raise ShippedWeightsError(f"The shipped {what} {path} is not readable JSON ({error}). Reinstall prune-gym, "
                                  "or regenerate it with `prune-gym ship-weights`.") from error
    if not isinstance(data, dict):
        raise ShippedWeightsError(f"The shipped {what} {path} holds {type(data).__name__}, not a JSON object.")
    return data


def read_index(directory: Path | None = None) -> list[dict[str, Any]]:
    """The rows of ``index.json``: ``name``, ``env_id``, ``shipped`` and (if shipped) ``manifest``.
    No index (e.g. a source tree before the first ``ship-weights``) means nothing is shipped."""
    directory = SHIPPED_DIR if directory is None else directory
    path = directory / INDEX_FILE
    if not path.is_file():
        return []
    rows = _read_json(path, "weights index").get("configurations")
    if not isinstance(rows, list):
        raise ShippedWeightsError(f"The shipped weights index {path} has no 'configurations' list.")
    return rows


def shipped_manifests(directory: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """(manifest path, manifest) of every configuration the index marks as shipped."""
    directory = SHIPPED_DIR if directory is None else directory
    return [(directory / row["manifest"], _read_json(directory / row["manifest"], "weights manifest"))
            for row in read_index(directory) if row.get("shipped")]


def find_shipped(request: BackboneRequest, directory: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The shipped (manifest path, manifest) whose request equals ``request`` and whose cache
    format is the current one; ``None`` when no shipped file matches (train or use the cache)."""
    record = request_record(request)
    for path, manifest in shipped_manifests(directory):
        if manifest.get("request") == record and manifest.get("cache_format") == CACHE_FORMAT:
            return path, manifest
    return None


def describe_shipped(directory: Path | None = None) -> str:
    """One line per shipped configuration: its name and request (for error messages)."""
    lines = [f"  - {manifest.get('name')}: {json.dumps(manifest.get('request'), sort_keys=True)}"
             for _, manifest in shipped_manifests(directory)]
    return "\n".join(lines) if lines else "  (none)"


def check_dataset_fits(manifest: dict[str, Any], dataset: ImageDataset, source: Path) -> None:
    """A :class:`ShippedWeightsError` unless ``dataset`` has the images and classes the shipped
    head (the weights file ``source``) was trained for."""
    architecture = manifest["architecture"]
    expected_shape = tuple(architecture["image_shape"])
    if tuple(dataset.image_shape) != expected_shape or dataset.num_classes != architecture["num_classes"]:
        raise ShippedWeightsError(
            f"The shipped backbone {source} was trained on {manifest['request']['dataset']} images of shape "
            f"{expected_shape} with {architecture['num_classes']} classes, but the data loaded from "
            f"{dataset.source} has images of shape {tuple(dataset.image_shape)} and {dataset.num_classes} classes. "
            f"Point data_root at a copy of {manifest['request']['dataset']} in that layout, or pass "
            "weights=\"train\" to train a backbone for this data.")


def load_shipped(manifest_path: Path, manifest: dict[str, Any], model: nn.Module, dataset: ImageDataset
                 ) -> dict[str, Any]:
    """Load the shipped weights of ``manifest`` into ``model``; return their pretraining metrics.

    Checks, in order: the dataset fits the head; the file's bytes hash to the manifest's
    ``file_sha256``; the file is an intact weights payload (its own tensor checksum,
    :func:`load_weights_file`); its tensors hash to the manifest's ``weights_sha256``; its cache
    key is the manifest's; the tensors fit ``model`` exactly.

    Raises:
        ShippedWeightsError: any check failing, naming the file, what was expected and the fix.
    """
    name = manifest.get("name", manifest_path.stem)
    path = manifest_path.parent / manifest["weights_file"]
    check_dataset_fits(manifest, dataset, path)
    if not path.is_file():
        raise ShippedWeightsError(f"The shipped weights file {path} named by {manifest_path} is missing. "
                                  + _fix_hint(name))
    actual_bytes = file_sha256(path)
    if actual_bytes != manifest["file_sha256"]:
        raise ShippedWeightsError(
            f"The shipped weights file {path} does not match its manifest {manifest_path}: its bytes hash to "
            f"SHA-256 {actual_bytes[:16]}…, the manifest expects {manifest['file_sha256'][:16]}…. "
            + _fix_hint(name))
    try:
        payload = load_weights_file(path)
    except WeightsFileError as error:
        raise ShippedWeightsError(f"The shipped weights file {path} is unusable: {error} " + _fix_hint(name)) from error
    if payload["sha256"] != manifest["weights_sha256"] or payload.get("key") != manifest["cache_key"]:
        raise ShippedWeightsError(
            f"The shipped weights file {path} holds other weights than its manifest {manifest_path} describes "
            f"(tensor SHA-256 {payload['sha256'][:16]}…, manifest {manifest['weights_sha256'][:16]}…; cache keys "
            f"{'equal' if payload.get('key') == manifest['cache_key'] else 'differ'}). " + _fix_hint(name))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0]
        raise ShippedWeightsError(f"The shipped weights file {path} does not fit the requested backbone "
                                  f"({reason}). " + _fix_hint(name)) from error
    return payload.get("metrics", {})


# ----------------------------------------------------------------------------------------------
# Writing (prune-gym ship-weights)
# ----------------------------------------------------------------------------------------------


def atomic_write_json(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON through :func:`~prune_gym.weights.atomic_write`, readable by all
    (package data)."""
    text = json.dumps(data, indent=1) + "\n"
    atomic_write(path, lambda temporary: Path(temporary).write_text(text), 0o644)


def write_shipped(config: ShippedConfig, model: nn.Module, key: dict[str, Any], metrics: dict[str, Any],
                  manifest_fields: dict[str, Any], directory: Path | None = None) -> Path:
    """Write ``NAME.pt`` (float32 weights in the cache's layout) and then ``NAME.json`` (the
    manifest: ``manifest_fields`` plus the file's checksums), each atomically. Returns the manifest path."""
    directory = SHIPPED_DIR if directory is None else directory
    state_dict = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    payload = weights_payload(state_dict, key=key, metrics=metrics)
    weights_path = directory / f"{config.name}.pt"
    atomic_torch_save(payload, weights_path)
    manifest = {
        "manifest_format": MANIFEST_FORMAT,
        "name": config.name,
        "env_id": config.env_id,
        **manifest_fields,
        "cache_format": key["format"],
        "cache_key": key,
        "weights_file": weights_path.name,
        "weights_sha256": payload["sha256"],
        "file_sha256": file_sha256(weights_path),
        "file_bytes": weights_path.stat().st_size,
        "pretrain_metrics": metrics,
    }
    manifest_path = directory / f"{config.name}.json"
    atomic_write_json(manifest, manifest_path)
    return manifest_path


def write_index(directory: Path | None = None) -> Path:
    """Rewrite ``index.json`` from :data:`SHIPPED_CONFIGS` and the files present in ``directory``."""
    directory = SHIPPED_DIR if directory is None else directory
    rows = []
    for config in SHIPPED_CONFIGS:
        shipped = (directory / f"{config.name}.json").is_file() and (directory / f"{config.name}.pt").is_file()
        row = {"name": config.name, "env_id": config.env_id, "shipped": shipped}
        if shipped:
            row |= {"manifest": f"{config.name}.json", "weights_file": f"{config.name}.pt"}
        rows.append(row)
    path = directory / INDEX_FILE
    atomic_write_json({"manifest_format": MANIFEST_FORMAT, "configurations": rows}, path)
    return path
