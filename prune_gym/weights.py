"""The pretrained-weights cache: keyed, checksummed files that are loaded only when intact and matching.

Cached weights live under ``$PRUNE_GYM_CACHE`` (default ``~/.cache/prune_gym/weights``). A cache
file stores its full key — architecture, dataset fingerprint, validation split, seed and training
budget — and the SHA-256 of its tensors (:func:`state_dict_sha256`). It is loaded only when the
key matches exactly, the tensors hash to the stored checksum and the weights load strictly;
anything else (a truncated write, flipped bytes inside a tensor, a file from another version,
another dataset) is reported with :class:`WeightsCacheWarning` and retrained, never used.

Why a checksum: ``torch.load`` does not check the zip records' CRCs, so damaged tensor bytes load
silently as wrong weights. :func:`load_weights_file` is the one verified reader; the cache catches
its :class:`WeightsFileError` and retrains, a loader of shipped weights lets it propagate.

Writes go to a temporary file in the same directory and are renamed into place, so a killed
process cannot leave a half-written file behind; the file gets the mode a plain ``open()`` would
give it (``0o666`` less the umask: group-readable in a shared cache). When the cache directory is
not writable (a read-only or another user's shared cache) the file goes to the first writable
fallback (:func:`fallback_cache_dirs`) with a warning, and where none is writable the weights stay
in memory for the process — trained weights are never lost to a traceback.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Bump when the training procedure or the file layout changes what a cached file contains: older
# files then fail the key check and are retrained rather than loaded. 3: files carry "sha256".
CACHE_FORMAT = 3


class WeightsCacheWarning(UserWarning):
    """A cached weights file was unusable (corrupt, for another key, or unwritable) and is being
    retrained or stored elsewhere."""


class WeightsFileError(ValueError):
    """A weights file cannot be trusted: unreadable, without a checksum, or failing it."""


# ----------------------------------------------------------------------------------------------
# Checksums and the verified reader
# ----------------------------------------------------------------------------------------------


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over every tensor's name, dtype, shape and raw bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        # Raw bytes through a uint8 view: works for every dtype, including those numpy lacks.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def verify_checksum(state_dict: dict[str, torch.Tensor], expected_sha256: str | None, source: str | Path) -> None:
    """Raise :class:`WeightsFileError` unless ``state_dict`` hashes to ``expected_sha256``.

    ``source`` names the file in the message. Reusable by any loader of weights files: the cache
    catches the error and retrains; a loader of shipped weights should let it propagate.
    """
    if not expected_sha256:
        raise WeightsFileError(
            f"{source} records no SHA-256 checksum of its weights, so they cannot be verified. "
            "Expected a file written by prune-gym ≥ cache format 3; delete it and retrain, or fetch a fresh copy.")
    actual = state_dict_sha256(state_dict)
    if actual != expected_sha256:
        raise WeightsFileError(
            f"{source} is damaged: its tensors hash to SHA-256 {actual[:16]}…, but the file records "
            f"{expected_sha256[:16]}…. Delete the file and retrain, or fetch a fresh copy.")


def weights_payload(state_dict: dict[str, torch.Tensor], **extra: Any) -> dict[str, Any]:
    """What a weights file holds: the state dict, its :func:`state_dict_sha256` and ``extra``
    (plain data only — files are read with ``weights_only=True``)."""
    return {**extra, "state_dict": state_dict, "sha256": state_dict_sha256(state_dict)}


def load_weights_file(path: str | Path) -> dict[str, Any]:
    """The payload of a weights file written with :func:`weights_payload`, checksum verified.

    Loads with ``weights_only=True``, so a crafted file cannot run code.

    Raises:
        FileNotFoundError: no file at ``path``.
        WeightsFileError: unreadable, not a weights payload, or a checksum mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - zip, pickle and torch errors all mean "unreadable"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise WeightsFileError(f"{path} is not a readable weights file ({type(error).__name__}: {reason}). "
                               "It may be truncated or not a prune-gym file; delete it and retrain.") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise WeightsFileError(f"{path} holds {type(payload).__name__}, not a weights payload "
                               "(a dict with 'state_dict' and 'sha256').")
    verify_checksum(payload["state_dict"], payload.get("sha256"), path)
    return payload


# ----------------------------------------------------------------------------------------------
# Where cache files live
# ----------------------------------------------------------------------------------------------


def weights_cache_dir() -> Path:
    """``$PRUNE_GYM_CACHE`` if set, else ``~/.cache/prune_gym/weights``."""
    return Path(os.environ.get("PRUNE_GYM_CACHE") or Path.home() / ".cache" / "prune_gym" / "weights").expanduser()


def private_temp_dir(create: bool = True) -> Path | None:
    """``<tempdir>/prune_gym-<user>``, a private (0o700) directory of this user; ``None`` when it
    does not exist (and ``create`` is false), cannot be created, or is not this user's private
    directory (another user could have planted files in it)."""
    owner = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
    base = Path(tempfile.gettempdir()) / f"prune_gym-{owner}"
    try:
        if create:
            base.mkdir(mode=0o700, exist_ok=True)
        info = base.lstat()
    except OSError:
        return None
    foreign = hasattr(os, "getuid") and info.st_uid != os.getuid()
    if not stat.S_ISDIR(info.st_mode) or foreign or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return base


def fallback_cache_dirs(create: bool = False) -> list[Path]:
    """Where cache files go when :func:`weights_cache_dir` is not writable, in order:
    ``~/.cache/prune_gym/weights`` (unless that is the cache directory), then ``weights`` in the
    private per-user temp directory (:func:`private_temp_dir`, made when ``create``)."""
    primary = weights_cache_dir()
    candidates = [Path.home() / ".cache" / "prune_gym" / "weights"]
    temp = private_temp_dir(create)
    if temp is not None:
        candidates.append(temp / "weights")
    return [directory for directory in candidates if directory != primary]


def is_writable_dir(directory: Path) -> bool:
    """Whether files can be created in ``directory``, or in it once its missing parents are made
    (judged at its nearest existing ancestor)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def cache_path(key: dict[str, Any]) -> Path:
    """The cache file of ``key`` in :func:`weights_cache_dir` (a name readable by people, plus a
    digest of the whole key)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    architecture = key["architecture"]
    return weights_cache_dir() / f"{architecture['name']}-{key['dataset']['name']}-k{architecture['k']}-{digest}.pt"


# ----------------------------------------------------------------------------------------------
# Reading and writing the cache
# ----------------------------------------------------------------------------------------------


def read_cache(path: Path, key: dict[str, Any], model: nn.Module) -> dict[str, Any] | None:
    """Load the cache file ``path`` (or its copy in a fallback directory) into ``model`` if it is
    intact and for ``key``; return its metrics. Unusable files are reported with
    :class:`WeightsCacheWarning`; returns ``None`` when no usable file exists (retrain).

    The fallback directories are read only while ``path``'s directory is not writable — exactly
    when :func:`write_cache` puts files there — so a writable cache never picks up stray copies."""
    candidates = [path]
    if not is_writable_dir(path.parent):
        candidates += [directory / path.name for directory in fallback_cache_dirs(create=False)]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            payload = load_weights_file(candidate)
            if payload.get("key") != key:
                raise ValueError("its stored key does not match the requested backbone")
            model.load_state_dict(payload["state_dict"], strict=True)
            return payload.get("metrics", {})
        except Exception as error:  # noqa: BLE001 - any unusable file is retrained, never trusted
            warnings.warn(f"Ignoring weights cache file {candidate} ({type(error).__name__}: {error}); retraining.",
                          WeightsCacheWarning, stacklevel=3)
    return None


def _file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the process umask."""
    try:  # Linux ≥ 4.7 reports the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[str], object], mode: int | None = None) -> None:
    """Create ``path`` by ``write(temporary_path)`` on a temporary file in the same directory, then
    ``os.replace``: a killed process never leaves a half-written file. ``mode`` sets the file's
    permissions (``None`` keeps ``mkstemp``'s 0o600). The one atomic writer of the project: weights
    (:func:`atomic_torch_save`), shipped manifests, run files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` through :func:`atomic_write` (weights cache, agent checkpoints). The file gets
    a plain file's mode (``mkstemp`` alone would leave it 0o600, unreadable for the group of a
    shared cache)."""
    atomic_write(path, lambda temporary: torch.save(payload, temporary), _file_mode())


def _write_targets(path: Path) -> Iterator[Path]:
    """``path``, then its name in each fallback directory (made only once they are needed)."""
    yield path
    for directory in fallback_cache_dirs(create=True):
        yield directory / path.name


def writable_location(path: Path) -> Path:
    """Where a file that belongs beside the cache file ``path`` can be written: ``path`` itself
    when its directory is writable, else its name in the first writable fallback directory (the
    place :func:`write_cache` will pick), else ``path`` (its writer then warns).

    Pretraining keeps its resumable progress here, so a read-only cache directory does not cost
    the checkpoints of a run whose weights end up in a fallback."""
    return next((candidate for candidate in _write_targets(path) if is_writable_dir(candidate.parent)), path)


def write_cache(path: Path, key: dict[str, Any], model: nn.Module, metrics: dict[str, Any]) -> Path | None:
    """Write ``model``'s weights for ``key`` to ``path``, else to the first writable
    :func:`fallback_cache_dirs` (with a :class:`WeightsCacheWarning`).

    Returns:
        the file written, or ``None`` when no location was writable (warned; the caller keeps the
        weights in memory).
    """
    payload = weights_payload(model.state_dict(), key=key, metrics=metrics)
    failures: list[str] = []
    for candidate in _write_targets(path):
        try:
            atomic_torch_save(payload, candidate)
        except (OSError, RuntimeError) as error:
            # OSError: a read-only, full or another user's directory; RuntimeError: torch's stream
            # writer failing on such a disk. Either way try the next place rather than lose the weights.
            failures.append(f"{candidate.parent} ({type(error).__name__}: {getattr(error, 'strerror', None) or error})")
            continue
        if failures:
            warnings.warn(f"Could not write the weights cache in {'; '.join(failures)}; cached the weights at "
                          f"{candidate} instead. Set PRUNE_GYM_CACHE to a writable directory to choose the place.",
                          WeightsCacheWarning, stacklevel=2)
        return candidate
    warnings.warn(f"Could not write the weights cache anywhere ({'; '.join(failures)}); the trained weights stay "
                  "in memory for this process only and will be retrained by the next one. Set PRUNE_GYM_CACHE "
                  "to a writable directory to keep them.", WeightsCacheWarning, stacklevel=2)
    return None
