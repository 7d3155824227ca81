"""Datasets of the sweep: training sets, the calibration and eval sets, and getting the files.

Labels stop in this module. A `CalibrationSet` is built from pixels alone, so repair code cannot
see a label even by accident. Each train split holds out its validation split
(`sweep.tasks.datasets.holdout`): `train_dataset` and `calibration_set` never serve those images,
and `eval_set(..., split="val")` evaluates on them. Calibration and eval images are decoded once
into a content-keyed uint8 cache, so repeated trials never unpickle or decode JPEGs again.

The facts about each dataset live in `sweep.catalog.datasets`; `get_spec` returns its entry.
Where the files are: `find_data`; `download` (`python -m sweep.data download NAME`) fetches the
ones torchvision can download. CIFAR pickles are MD5-checked against torchvision's table; set
PRUNE_SWEEP_SKIP_CHECKSUMS=1 to load other CIFAR-format files (a warning is logged each time).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sweep.catalog.datasets import DATASETS, EVAL_SPLITS, DatasetInfo
from sweep.core.errors import DataMissingError, UnknownNameError, UserError
from sweep.core.paths import default_cache_dir
from sweep.tasks.datasets import cache
from sweep.tasks.datasets.download import MIRROR_ENV, SKIP_CHECKSUMS_ENV, check_mirror, fetch
from sweep.tasks.datasets.holdout import RULE, Holdout, holdout, index_digest
from sweep.tasks.datasets.sources import SOURCES, Split

DEFAULT_DATA_ROOT = Path("data")
_CACHE_FORMAT = 1  # bump when preprocessing changes, so old cache entries are not reused
_EVAL_SUBSET_SEED = 0


def find_data(name: str, data_root: Path | str | None = None) -> Path | None:
    """The folder holding `name`'s files (data root first, then system copies); no download."""
    DATASETS[name]
    return SOURCES[name].locate(_data_root(data_root))


def missing_data_message(name: str, data_root: Path | str | None = None) -> str:
    """Where to put which files of `name`, and the command that downloads them if any can."""
    root = _data_root(data_root)
    return f"{name} data not found under {root}: {how_to_get(name, root)}"


def how_to_get(name: str, data_root: Path | str | None = None) -> str:
    """The download command for `name` (if it has one) and where its files go."""
    info = DATASETS[name]
    root = _data_root(data_root)
    expected = SOURCES[name].expected(root)
    if info.download is None:
        return f"{expected}; it cannot be downloaded automatically"
    return f"run `python -m sweep.data download {name} --data-root {root}`, or {expected}"


def download(
    name: str,
    data_root: Path | str | None = None,
    *,
    mirror: str | None = None,
    verify_checksums: bool = True,
) -> Path:
    """Fetch `name`'s official files into the data root unless they are there already;
    returns the folder the loaders open.

    `mirror` (default $PRUNE_SWEEP_MIRROR) replaces the host of the catalog's URLs. The files are
    checked against the official MD5s unless `verify_checksums` is False or
    PRUNE_SWEEP_SKIP_CHECKSUMS=1. Bad name, unwritable root, network or archive failure: a
    UserError with one line; nothing is left in the data root.
    """
    info = DATASETS[name]
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    check_mirror(mirror)
    root = _data_root(data_root)
    found = SOURCES[name].locate(root)
    if found is not None and found.is_relative_to(root):
        return found
    if info.download is None:
        raise DataMissingError(missing_data_message(name, root))
    verify = verify_checksums and os.environ.get(SKIP_CHECKSUMS_ENV) != "1"
    fetch(info.download, root, mirror, verify)
    located = SOURCES[name].locate(root)
    if located is None:
        raise DataMissingError(
            f"the download of {name} did not produce a complete copy: "
            + missing_data_message(name, root)
        )
    return located


class TrainingImages(torch.utils.data.Subset):
    """The train split without its validation split; `holdout` says which images were left out."""

    def __init__(self, dataset: torch.utils.data.Dataset, held: Holdout) -> None:
        super().__init__(dataset, held.train.tolist())
        self.holdout = held


def train_dataset(
    name: str, data_root: Path | str | None = None, augment: bool = True, download: bool = True
) -> TrainingImages:
    """The train split minus the validation split; items (float normalised CxHxW tensor, int
    label), in train-split order.

    With `augment`: random crop (zero padding 4 at 32 px, 2 for Fashion-MNIST) + horizontal flip,
    batched on the split held in memory; RandomResizedCrop(224) + flip for the folder datasets.
    Without it: test-time preprocessing.
    """
    spec = DATASETS[name]
    split = _open(name, data_root, train=True, allow_download=download)
    return TrainingImages(split.training_set(augment, spec.normalize), holdout(name, len(split)))


def validation_split(name: str, data_root: Path | str | None = None) -> Holdout:
    """Which positions of `name`'s train split (as found under the data root) are held out."""
    DATASETS[name]
    return holdout(name, len(_open(name, data_root, train=True)))


def calibration_indices(held: Holdout, size: int, seed: int) -> np.ndarray:
    """Train-split positions of a calibration draw: `size` of the training images (never the
    validation split), in the order of a torch randperm seeded with `seed`."""
    order = torch.randperm(len(held.train), generator=torch.Generator().manual_seed(seed))
    return held.train[order[:size].numpy()]


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """Unlabelled calibration images: built from pixels alone, and (slots) no place for labels."""

    # Declared by hand: dataclass(slots=True, frozen=True) breaks __setattr__ on Python 3.11.
    __slots__ = ("images", "spec", "key")
    images: torch.Tensor  # uint8 [N,C,H,W], test-time preprocessing
    spec: DatasetInfo
    key: str  # content key: dataset, size, seed, drawn indices and pixels

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int = 256) -> Iterator[torch.Tensor]:
        """Float normalised CPU batches, in draw order."""
        return _normalized(self.images, self.spec, batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.batches()


def calibration_set(
    name: str,
    size: int,
    seed: int,
    data_root: Path | str | None = None,
    cache_dir: Path | str | None = None,
) -> CalibrationSet:
    """`size` training images (`calibration_indices`), test-time preprocessing."""
    spec = DATASETS[name]
    if size < 1:
        raise UserError(f"calibration size {size} must be a positive number of images")
    split = _open(name, data_root, train=True)

    def decode() -> cache.Decoded:
        held = holdout(name, len(split))
        if size > len(held.train):
            raise UserError(
                f"calibration size {size} exceeds the {len(held.train)} train images of {name} "
                f"outside its validation split"
            )
        indices = calibration_indices(held, size, seed)
        header = {"dataset": name, "size": size, "seed": seed, "indices": index_digest(indices)}
        return cache.Decoded(header, _shape(spec, size), split.images(indices), labels=None)

    choice = {"size": size, "seed": seed, "holdout": RULE}
    base = _cache_base(cache_dir, "calibration", name, split, choice)
    key = cache.ensure(base, decode, with_labels=False)
    images = torch.from_numpy(np.load(cache.paths(base)[0]))
    return CalibrationSet(images=images, spec=spec, key=key)


@dataclass(frozen=True, eq=False)
class EvalSet:
    """An eval split (see `eval_set`), decoded once, memory-mapped."""

    images: np.ndarray  # uint8 [N,C,H,W], read-only memmap of the cache file
    labels: np.ndarray  # int64 [N]
    spec: DatasetInfo
    key: str  # content key: dataset, pixels and labels

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(float normalised images, int64 labels) CPU batches, in cache order."""
        starts = range(0, len(self), batch_size)
        normalized = _normalized(self.images, self.spec, batch_size)
        for start, images in zip(starts, normalized, strict=True):
            yield images, torch.from_numpy(self.labels[start : start + batch_size])


def eval_set(
    name: str,
    data_root: Path | str | None = None,
    cache_dir: Path | str | None = None,
    limit: int | None = None,
    split: str = "test",
) -> EvalSet:
    """An eval split from `<cache_dir>/eval/<name>-<digest>.npy`, decoding it on first use.

    `split`: "test", the official test split (the `val` folder of the ImageNet-style datasets),
    or "val", the validation split held out of the train split, with test-time preprocessing.
    `limit` keeps the first `limit` images of a fixed (seed 0) shuffle of the split, in file
    order: the folder datasets are sorted by class, so a plain prefix would hold few classes.
    """
    spec = DATASETS[name]
    if split not in EVAL_SPLITS:
        raise UnknownNameError("eval split", split, EVAL_SPLITS)
    if limit is not None and limit < 1:
        raise UserError(f"eval limit {limit} must be a positive number of images (or None)")
    source = _open(name, data_root, train=split == "val")

    def decode() -> cache.Decoded:
        pool = holdout(name, len(source)).val if split == "val" else np.arange(len(source))
        if limit is None or limit >= len(pool):
            indices = pool
        else:
            seeded = torch.Generator().manual_seed(_EVAL_SUBSET_SEED)
            indices = np.sort(pool[torch.randperm(len(pool), generator=seeded)[:limit].numpy()])
        header = {"dataset": name, "split": split, "images": len(indices)}
        return cache.Decoded(
            header, _shape(spec, len(indices)), source.images(indices), source.labels()[indices]
        )

    choice = {"split": split, "limit": limit} | ({"holdout": RULE} if split == "val" else {})
    base = _cache_base(cache_dir, "eval", name, source, choice)
    key = cache.ensure(base, decode, with_labels=True)
    image_file, label_file, _ = cache.paths(base)
    return EvalSet(
        images=np.load(image_file, mmap_mode="r"), labels=np.load(label_file), spec=spec, key=key
    )


def _open(
    name: str, data_root: Path | str | None, train: bool, allow_download: bool = False
) -> Split:
    """Locate (and, if allowed and needed, download) `name`, then open one split."""
    source = SOURCES[name]
    root = _data_root(data_root)
    folder = source.locate(root)
    if folder is None and allow_download and DATASETS[name].download is not None:
        try:
            folder = download(name, root)
        except DataMissingError as error:
            raise DataMissingError(f"{error}; or by hand: {source.expected(root)}") from error
    if folder is None:
        raise DataMissingError(missing_data_message(name, root))
    return _opened(name, folder, train)


_OPENED: dict[tuple[str, Path, bool, str], Split] = {}  # newest last
_OPENED_LIMIT = 8


def _opened(name: str, folder: Path, train: bool) -> Split:
    """One open split per process while its files stay the same (size and mtime): a small-image
    split reads its files whole on first use, so a worker drawing ten calibration sets
    decompresses Fashion-MNIST's train file once, not ten times."""
    split = SOURCES[name].open(folder, train)
    key = (name, folder, train, split.fingerprint())
    if key not in _OPENED:
        _OPENED[key] = split
        while len(_OPENED) > _OPENED_LIMIT:
            del _OPENED[next(iter(_OPENED))]
    return _OPENED[key]


def _normalized(
    images: torch.Tensor | np.ndarray, spec: DatasetInfo, batch_size: int
) -> Iterator[torch.Tensor]:
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if isinstance(chunk, np.ndarray):  # copy out of the read-only memmap
            chunk = torch.from_numpy(np.array(chunk))
        yield spec.normalize(chunk)


def _cache_base(
    cache_dir: Path | str | None, kind: str, name: str, split: Split, choice: dict
) -> Path:
    """Cache entry named by what determines its content: format, source files, image choice."""
    identity = [_CACHE_FORMAT, kind, name, split.fingerprint(), choice]
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:20]
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    return root / kind / f"{name}-{digest}"


def _data_root(data_root: Path | str | None) -> Path:
    return Path(data_root if data_root is not None else DEFAULT_DATA_ROOT).expanduser().absolute()


def _shape(spec: DatasetInfo, count: int) -> tuple[int, int, int, int]:
    return (count, spec.in_channels, spec.image_size, spec.image_size)
