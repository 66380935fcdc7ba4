"""What the JPEG copy of CIFAR-10 costs a pretrained backbone, measured on the same images.

    PRUNE_GYM_DATA=../shared/data python benchmarks/jpeg_penalty.py [ENV_ID] [--env-kwargs K=V ...]

``cifar10.npz`` (the full training set and 7,500 test images) was decoded from JPEG files;
``cifar10-subset.npz`` holds exact CIFAR-10 pixels for 5,085 training and 517 test images. The
script finds each exact-pixel image's JPEG copy in the full file (same label; nearest by 8×8
block means, confirmed by a mean absolute pixel difference ≤ ``--max-difference``/255 and a
second-nearest candidate far away), then scores the env's pretrained backbone (``weights`` and
the other backbone kwargs as the env takes them) on both versions of the images it never trained
on: the subset's test images, and the subset's training images whose JPEG copies sit in the
backbone's validation split. Prints accuracy on exact pixels and on their JPEG copies with the
paired difference and its standard error. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from prune_gym.cli import parse_env_kwargs
from prune_gym.data import load_npz, normalize
from prune_gym.pretraining import pretrained_backbone


def block_signature(images: np.ndarray) -> torch.Tensor:
    """Means of 4×4 pixel blocks (N × 192 for 3×32×32): robust to JPEG noise, cheap to compare."""
    tensor = torch.from_numpy(images).float()
    count, channels, height, width = tensor.shape
    return tensor.view(count, channels, height // 4, 4, width // 4, 4).mean((3, 5)).reshape(count, -1)


def match_copies(exact: np.ndarray, exact_labels: np.ndarray, copies: np.ndarray, copy_labels: np.ndarray,
                 max_difference: float) -> np.ndarray:
    """Index into ``copies`` of each exact image's copy, or -1 where none is confirmed."""
    matches = np.full(len(exact), -1)
    exact_signature, copy_signature = block_signature(exact), block_signature(copies)
    for label in np.unique(exact_labels):
        rows, candidates = np.where(exact_labels == label)[0], np.where(copy_labels == label)[0]
        distances = torch.cdist(exact_signature[rows], copy_signature[candidates])
        nearest = distances.topk(2, largest=False)
        for row, (first, _), (best, runner_up) in zip(rows, nearest.indices.tolist(), nearest.values.tolist()):
            difference = np.abs(exact[row].astype(np.float32) - copies[candidates[first]].astype(np.float32)).mean()
            if difference <= max_difference and runner_up > 2 * best:
                matches[row] = candidates[first]
    return matches


def paired_scores(model: torch.nn.Module, statistics, exact: np.ndarray, copies: np.ndarray,
                  labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness (bool arrays) on the exact pixels and on their JPEG copies."""
    def correct(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = torch.cat([model(normalize(torch.from_numpy(images[start: start + 500]), statistics))
                                for start in range(0, len(images), 500)])
        return (logits.argmax(1).numpy() == labels)
    return correct(exact), correct(copies)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("env_id", nargs="?", default="MaskOffset-CIFAR10-v0")
    parser.add_argument("--env-kwargs", nargs="*", default=[])
    parser.add_argument("--data-root", default=None, help="directory with cifar10.npz and cifar10-subset.npz "
                        "(default $PRUNE_GYM_DATA)")
    parser.add_argument("--max-difference", type=float, default=16.0,
                        help="largest mean absolute pixel difference (of 255) accepted as the same image")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kwargs = parse_env_kwargs(args.env_kwargs)
    weights = kwargs.pop("weights", "auto")
    request = gym.make(args.env_id, disable_env_checker=True, **kwargs).unwrapped.settings.backbone_request()
    root = Path(args.data_root or os.environ.get("PRUNE_GYM_DATA", "../shared/data"))
    subset = load_npz(root / "cifar10-subset.npz", "cifar10")
    model, _, full = pretrained_backbone(request, root / "cifar10.npz", device="cpu", weights=weights)
    model.eval()
    print(f"{args.env_id} backbone {request.backbone}, budget {request.budget.record()}, weights={weights}")

    test_matches = match_copies(subset.x_test.numpy(), subset.y_test.numpy(), full.x_test.numpy(),
                                full.y_test.numpy(), args.max_difference)
    train_matches = match_copies(subset.x_train.numpy(), subset.y_train.numpy(), full.x_train.numpy(),
                                 full.y_train.numpy(), args.max_difference)
    validation = set(full.split_indices("val", request.val_fraction).tolist())
    held_out = np.array([match in validation for match in train_matches])
    print(f"matched {int((test_matches >= 0).sum())} of {len(test_matches)} exact test images and "
          f"{int((train_matches >= 0).sum())} of {len(train_matches)} exact training images "
          f"({int(held_out.sum())} of them in the validation split)")

    totals = []
    for name, exact, labels, copies in (
            ("subset test images", subset.x_test.numpy()[test_matches >= 0], subset.y_test.numpy()[test_matches >= 0],
             full.x_test.numpy()[test_matches[test_matches >= 0]]),
            ("held-out training images", subset.x_train.numpy()[held_out], subset.y_train.numpy()[held_out],
             full.x_train.numpy()[train_matches[held_out]])):
        on_exact, on_copy = paired_scores(model, full, exact, copies, labels)
        totals.append((on_exact, on_copy))
        difference = on_exact.astype(float) - on_copy
        print(f"{name:26s} {len(labels):4d} images: exact {100 * on_exact.mean():.2f} %, JPEG "
              f"{100 * on_copy.mean():.2f} %, exact − JPEG {100 * difference.mean():+.2f} ± "
              f"{100 * difference.std(ddof=1) / np.sqrt(len(difference)):.2f} points")
    on_exact, on_copy = (np.concatenate(parts) for parts in zip(*totals))
    difference = on_exact.astype(float) - on_copy
    print(f"{'both':26s} {len(difference):4d} images: exact − JPEG {100 * difference.mean():+.2f} ± "
          f"{100 * difference.std(ddof=1) / np.sqrt(len(difference)):.2f} points")


if __name__ == "__main__":
    main()
