"""The pretrained-weights cache: keyed files that are loaded only when they are intact and match.

Cached weights live under ``$PRUNE_GYM_CACHE`` (default ``~/.cache/prune_gym/weights``). A cache
file stores its full key — architecture, dataset fingerprint, validation split, seed and training
budget — and is loaded only when that key matches exactly and the weights load strictly; anything
else (a truncated write, a file from another version, another dataset) is reported with
:class:`WeightsCacheWarning` and retrained, never used. Writes go to a temporary file in the same
directory and are renamed into place, so a killed process cannot leave a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Bump when the training procedure changes what a cached file contains: older files then
# fail the key check and are retrained rather than loaded.
CACHE_FORMAT = 2


class WeightsCacheWarning(UserWarning):
    """A cached weights file was unusable (corrupt or for another key) and is being retrained."""


def weights_cache_dir() -> Path:
    """``$PRUNE_GYM_CACHE`` if set, else ``~/.cache/prune_gym/weights``."""
    return Path(os.environ.get("PRUNE_GYM_CACHE") or Path.home() / ".cache" / "prune_gym" / "weights").expanduser()


def cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    architecture = key["architecture"]
    return weights_cache_dir() / f"{architecture['name']}-{key['dataset']['name']}-k{architecture['k']}-{digest}.pt"


def read_cache(path: Path, key: dict[str, Any], model: nn.Module) -> dict[str, Any] | None:
    """Load ``path`` into ``model`` if it is an intact file for ``key``; else warn and return None."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("key") != key:
            raise ValueError("its stored key does not match the requested backbone")
        model.load_state_dict(payload["state_dict"], strict=True)
        return payload.get("metrics", {})
    except Exception as error:  # noqa: BLE001 - any unreadable file is retrained, never trusted
        warnings.warn(f"Ignoring weights cache file {path} ({type(error).__name__}: {error}); retraining.",
                      WeightsCacheWarning, stacklevel=3)
        return None

def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and ``os.replace``: a killed process never leaves a
    half-written file (weights cache, agent checkpoints)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

def write_cache(path: Path, key: dict[str, Any], model: nn.Module, metrics: dict[str, Any]) -> None:
    atomic_torch_save({"key": key, "state_dict": model.state_dict(), "metrics": metrics}, path)
