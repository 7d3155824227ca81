"""CIFAR-10 files in the exact on-disk format (python pickle batches), from given arrays.

For machines with no dataset at all: tests, and the GPU check, which must exercise the real
loader on CIFAR-shaped data. Real CIFAR files carry MD5 checksums that these cannot match; load
them with PRUNE_SWEEP_SKIP_CHECKSUMS=1 (the loader then says so).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

TRAIN_BATCHES = 5


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar10(
    root: Path,
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
) -> Path:
    """Write `root/cifar-10-batches-py`: 5 train batches, a test batch, batches.meta.

    Images are uint8 [N, 3, 32, 32]; N of the train split must be a multiple of 5.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    per_batch = len(train) // TRAIN_BATCHES
    if per_batch * TRAIN_BATCHES != len(train):
        raise ValueError(f"train images ({len(train)}) must split into {TRAIN_BATCHES} batches")
    for b in range(TRAIN_BATCHES):
        rows = slice(per_batch * b, per_batch * (b + 1))
        _pickle(
            folder / f"data_batch_{b + 1}",
            {
                "batch_label": f"training batch {b + 1} of {TRAIN_BATCHES}",
                "labels": np.asarray(train_labels[rows]).tolist(),
                "data": train[rows].reshape(per_batch, 3072),
                "filenames": [f"img_{i}.png" for i in range(per_batch)],
            },
        )
    _pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": np.asarray(test_labels).tolist(),
            "data": test.reshape(len(test), 3072),
            "filenames": [f"t_{i}.png" for i in range(len(test))],
        },
    )
    _pickle(
        folder / "batches.meta",
        {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch,
         "num_vis": 3072},
    )  # fmt: skip
    return folder
