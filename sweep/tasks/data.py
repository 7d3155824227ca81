"""Datasets of the sweep: the registry, training sets, and the calibration and eval sets.

Labels stop in this module. A `CalibrationSet` is built from pixels alone, so repair code cannot
see a label even by accident. Calibration and eval images are decoded once into a content-keyed
uint8 cache, so repeated trials never unpickle or decode JPEGs again.

Where the files are: `find_data`; offline with files absent, a `DataMissingError` says where to
put which files. CIFAR pickles are MD5-checked against torchvision's table; set
PRUNE_SWEEP_SKIP_CHECKSUMS=1 to load other CIFAR-format files (a warning is logged each time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sweep.cache import default_cache_dir
from sweep.errors import DataMissingError, UnknownNameError, UserError
from sweep.tasks.datasets import cache
from sweep.tasks.datasets.sources import SOURCES, Split

DEFAULT_DATA_ROOT = Path("data")
_CACHE_FORMAT = 1  # bump when preprocessing changes, so old cache entries are not reused
_EVAL_SUBSET_SEED = 0


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset: input shape, classes, normalisation."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int  # square model input side
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 [..., C, H, W] -> float32 (x / 255 - mean) / std, on the input's device."""
        if images_uint8.dtype != torch.uint8:
            raise TypeError(f"normalize expects uint8 images, got {images_uint8.dtype}")
        mean = torch.tensor(self.mean, device=images_uint8.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=images_uint8.device).view(-1, 1, 1)
        return images_uint8.float().div_(255).sub_(mean).div_(std)


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,)),
        DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        DatasetSpec("imagenette", 10, 3, 224, _IMAGENET_MEAN, _IMAGENET_STD),
        DatasetSpec("imagenet100", 100, 3, 224, _IMAGENET_MEAN, _IMAGENET_STD),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of `name`; UnknownNameError lists the known datasets."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("dataset", name, DATASETS) from None


def find_data(name: str, data_root: Path | str | None = None) -> Path | None:
    """The folder holding `name`'s files (data root first, then system copies); no download."""
    get_spec(name)
    return SOURCES[name].locate(_data_root(data_root))


def missing_data_message(name: str, data_root: Path | str | None = None) -> str:
    """Where to put which files of `name`, and whether a download can fetch them."""
    get_spec(name)
    root = _data_root(data_root)
    source = SOURCES[name]
    fetch = (
        "with internet access, train_dataset(download=True) (used by `python -m sweep.pretrain`) "
        f"downloads them into {root}"
        if source.download is not None
        else "it cannot be downloaded automatically"
    )
    return f"{name} data not found under {root}: {source.expected(root)}; {fetch}"


def train_dataset(
    name: str, data_root: Path | str | None = None, augment: bool = True, download: bool = True
) -> torch.utils.data.Dataset:
    """Training split; items (float normalised CxHxW tensor, int label).

    With `augment`: random crop (zero padding 4 at 32 px, 2 for Fashion-MNIST) + horizontal flip,
    batched on the split held in memory; RandomResizedCrop(224) + flip for the folder datasets.
    Without it: test-time preprocessing.
    """
    spec = get_spec(name)
    return _open(name, data_root, train=True, download=download).training_set(
        augment, spec.normalize
    )


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """Unlabelled calibration images: built from pixels alone, and (slots) no place for labels."""

    # Declared by hand: dataclass(slots=True, frozen=True) breaks __setattr__ on Python 3.11.
    __slots__ = ("images", "spec", "key")
    images: torch.Tensor  # uint8 [N,C,H,W], test-time preprocessing
    spec: DatasetSpec
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
    """`size` train-split images drawn with `seed` (torch randperm), test-time preprocessing."""
    spec = get_spec(name)
    if size < 1:
        raise UserError(f"calibration size {size} must be a positive number of images")
    split = _open(name, data_root, train=True)

    def decode() -> cache.Decoded:
        total = len(split)
        if size > total:
            raise UserError(f"calibration size {size} exceeds the {total} train images of {name}")
        order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
        indices = order[:size].numpy()
        header = {"dataset": name, "size": size, "seed": seed, "indices": _digest(indices)}
        return cache.Decoded(header, _shape(spec, size), split.images(indices), labels=None)

    base = _cache_base(cache_dir, "calibration", name, split, {"size": size, "seed": seed})
    key = cache.ensure(base, decode, with_labels=False)
    images = torch.from_numpy(np.load(cache.paths(base)[0]))
    return CalibrationSet(images=images, spec=spec, key=key)


@dataclass(frozen=True, eq=False)
class EvalSet:
    """The test split (val for the folder datasets), decoded once, memory-mapped."""

    images: np.ndarray  # uint8 [N,C,H,W], read-only memmap of the cache file
    labels: np.ndarray  # int64 [N]
    spec: DatasetSpec
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
) -> EvalSet:
    """The eval split from `<cache_dir>/eval/<name>-<digest>.npy`, decoding it on first use.

    `limit` keeps the first `limit` images of a fixed (seed 0) shuffle of the split, in file
    order: the folder datasets are sorted by class, so a plain prefix would hold few classes.
    """
    spec = get_spec(name)
    if limit is not None and limit < 1:
        raise UserError(f"eval limit {limit} must be a positive number of images (or None)")
    split = _open(name, data_root, train=False)

    def decode() -> cache.Decoded:
        total = len(split)
        if limit is None or limit >= total:
            indices = np.arange(total)
        else:
            seeded = torch.Generator().manual_seed(_EVAL_SUBSET_SEED)
            indices = np.sort(torch.randperm(total, generator=seeded)[:limit].numpy())
        header = {"dataset": name, "images": len(indices)}
        return cache.Decoded(
            header, _shape(spec, len(indices)), split.images(indices), split.labels()[indices]
        )

    base = _cache_base(cache_dir, "eval", name, split, {"limit": limit})
    key = cache.ensure(base, decode, with_labels=True)
    image_file, label_file, _ = cache.paths(base)
    return EvalSet(
        images=np.load(image_file, mmap_mode="r"), labels=np.load(label_file), spec=spec, key=key
    )


def _open(name: str, data_root: Path | str | None, train: bool, download: bool = False) -> Split:
    """Locate (and, if allowed and needed, download) `name`, then open one split."""
    source = SOURCES[name]
    root = _data_root(data_root)
    folder = source.locate(root)
    if folder is None and download and source.download is not None:
        try:
            source.download(root)
        except (OSError, RuntimeError) as error:
            raise DataMissingError(
                f"downloading {name} into {root} failed ({error}); "
                + missing_data_message(name, root)
            ) from error
        folder = source.locate(root)
    if folder is None:
        raise DataMissingError(missing_data_message(name, root))
    return source.open(folder, train)


def _normalized(
    images: torch.Tensor | np.ndarray, spec: DatasetSpec, batch_size: int
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


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(indices, dtype=np.int64)).hexdigest()


def _shape(spec: DatasetSpec, count: int) -> tuple[int, int, int, int]:
    return (count, spec.in_channels, spec.image_size, spec.image_size)
