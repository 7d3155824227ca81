"""The validation split: which train images dense training and calibration never see.

The rule: of a train split of `total` images (positions in the loaders' fixed order: file order
for the array datasets, sorted class folder then file name for the ImageNet-style ones), hold out
the `val_count` positions whose sha256(f"{RULE}/{name}/{position}") is smallest. A hash instead of
a random generator, because numpy's and torch's streams may change between versions, and the
split must not.

Stored as indices: for the datasets whose train split is fixed by its release (STORED), the
rule's draw at the catalog's `train_size` is committed as sweep/tasks/splits/<name>.npy (sorted
uint16), written by `python -m sweep.tasks.datasets.holdout`; the loaders read those files, and
tests check that they still equal the rule. ImageNet-100 has no file: its train folder is built by
each user from ImageNet-1k, so its split is drawn from the folder at load time by the same rule;
a complete tree gives everyone the same split, and the digest that every checkpoint's sidecar
records tells two different trees apart. A copy of another size (small test files, a partial
tree) gets the same rule at its size, with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from sweep.catalog.datasets import DATASETS
from sweep.core.atomic import atomic_write

log = logging.getLogger(__name__)

RULE = "prune-sweep validation split v1"  # in cache keys: a new rule makes new cache entries
STORED = ("fashion_mnist", "cifar10", "cifar100", "imagenette")
_FILE_DTYPE = np.uint16  # every STORED train split has fewer than 65536 images


@dataclass(frozen=True)
class Holdout:
    """A train split cut in two: sorted positions of the validation and the training images."""

    val: np.ndarray  # int64
    train: np.ndarray  # int64
    digest: str  # sha256 of `val` as int64: what a checkpoint records it held out

    def record(self) -> dict[str, object]:
        """What a checkpoint's sidecar stores about the split it held out."""
        return {"images": len(self.val), "train_images": len(self.train), "sha256": self.digest}


def index_digest(indices: np.ndarray) -> str:
    """sha256 of positions as little-endian int64: equal exactly when the positions are."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8")).hexdigest()


def val_count(name: str, total: int) -> int:
    """Images held out of a `total`-image train split: the catalog's `val_size` at its
    `train_size`, the same fraction (rounded half up, at least 1, at most total - 1) otherwise."""
    info = DATASETS[name]
    scaled = (2 * total * info.val_size + info.train_size) // (2 * info.train_size)
    return min(max(scaled, 1), max(total - 1, 0))


def draw(name: str, total: int, count: int) -> np.ndarray:
    """The rule: the `count` positions of smallest sha256(f"{RULE}/{name}/{position}"), sorted."""
    scores = [hashlib.sha256(f"{RULE}/{name}/{i}".encode()).digest() for i in range(total)]
    chosen = sorted(range(total), key=scores.__getitem__)[:count]
    return np.sort(np.asarray(chosen, dtype=np.int64))


def split_file(name: str) -> Path:
    """Where the committed validation indices of a STORED dataset live."""
    return Path(str(resources.files("sweep.tasks").joinpath("splits", f"{name}.npy")))


def holdout(name: str, total: int) -> Holdout:
    """The validation split of `name`'s train split of `total` images (a warning, each time,
    when that is not the release's size)."""
    info = DATASETS[name]
    if total != info.train_size:
        log.warning(
            "%s: the train split holds %d images, not the release's %d; holding out %d of them "
            "as the validation split by the release's rule",
            name, total, info.train_size, val_count(name, total),
        )  # fmt: skip
    return _holdout(name, total)


@functools.lru_cache(maxsize=16)
def _holdout(name: str, total: int) -> Holdout:
    count = val_count(name, total)
    if total == DATASETS[name].train_size and name in STORED:
        val = _read_stored(name, total, count)
    else:
        val = draw(name, total, count)
    train = np.setdiff1d(np.arange(total, dtype=np.int64), val, assume_unique=True)
    return Holdout(val=val, train=train, digest=index_digest(val))


def _read_stored(name: str, total: int, count: int) -> np.ndarray:
    """A committed index file, checked: a damaged one must not leak validation images."""
    path = split_file(name)
    val = np.load(path).astype(np.int64)
    if len(val) != count or np.any(np.diff(val) <= 0) or val[0] < 0 or val[-1] >= total:
        raise RuntimeError(
            f"{path} is damaged: expected {count} sorted distinct positions below {total}; "
            "rewrite it with python -m sweep.tasks.datasets.holdout"
        )
    return val


def write_files() -> list[Path]:
    """Draw and write the index file of every STORED dataset (the command that made them)."""
    written = []
    for name in STORED:
        info = DATASETS[name]
        val = draw(name, info.train_size, val_count(name, info.train_size)).astype(_FILE_DTYPE)
        path = split_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp, val=val: _save(tmp, val))
        written.append(path)
    return written


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle: np.save would append ".npy" to the temporary
        np.save(handle, array)


if __name__ == "__main__":
    for written_path in write_files():
        print(written_path)
