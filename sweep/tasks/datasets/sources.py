"""Where each dataset's files live, how to fetch them, and how to open a split.

A split exposes images and labels separately so that the calibration set can be built from
images alone. Opening a split is cheap (file listing only); decoding happens on demand.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torchvision import datasets as tvd
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.datasets.utils import check_integrity

from sweep.errors import DataMissingError
from sweep.tasks.datasets.formats import ImageFiles, fingerprint, read_cifar, read_idx
from sweep.tasks.datasets.training import AugmentedArrays, LabeledFiles, Normalize

log = logging.getLogger(__name__)

SKIP_CHECKSUMS_ENV = "PRUNE_SWEEP_SKIP_CHECKSUMS"
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
_DECODE_BATCH = 64


class Split(Protocol):
    """One split (train or test/val) of a dataset, with test-time preprocessing."""

    def __len__(self) -> int: ...
    def fingerprint(self) -> str: ...  # identity of the source files, computed without decoding
    def images(self, indices: np.ndarray) -> Iterator[np.ndarray]: ...  # uint8 [n,C,H,W] chunks
    def labels(self) -> np.ndarray: ...  # int64 [N]
    def training_set(self, augment: bool, normalize: Normalize) -> torch.utils.data.Dataset: ...


@dataclass
class ArraySplit:
    """A small-image split read whole into memory (Fashion-MNIST, CIFAR) on first use."""

    files: tuple[Path, ...]
    read: Callable[[], tuple[np.ndarray, np.ndarray]]
    pad: int  # zero padding of the training-time random crop

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self.read()
        if len(images) != len(labels):
            files = ", ".join(map(str, self.files))
            raise DataMissingError(f"{len(images)} images but {len(labels)} labels in {files}")
        return images, labels

    def __len__(self) -> int:
        return len(self._arrays[1])

    def fingerprint(self) -> str:
        return fingerprint(self.files, self.files[0].parent)

    def images(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        yield self._arrays[0][indices]

    def labels(self) -> np.ndarray:
        return self._arrays[1]

    def training_set(self, augment: bool, normalize: Normalize) -> AugmentedArrays:
        return AugmentedArrays(*self._arrays, normalize, self.pad, augment)


class FolderSplit:
    """An ImageNet-style split `<dir>/<wnid>/<image>`, restricted to the given class ids.

    Labels are indices into the full sorted `wnids` (ImageFolder's convention), even when some
    classes are absent, so a partial tree never shifts the labels.
    """

    def __init__(self, directory: Path, wnids: Sequence[str], image_size: int) -> None:
        present = {w: i for i, w in enumerate(wnids) if (directory / w).is_dir()}
        if len(present) < len(wnids):
            log.warning(
                "only %d of the %d classes found under %s; labels keep the %d-class indices",
                len(present), len(wnids), directory, len(wnids),
            )  # fmt: skip
        self.directory, self.image_size = directory, image_size
        self.samples = make_dataset(directory, present, extensions=IMG_EXTENSIONS, allow_empty=True)
        if not self.samples:
            raise DataMissingError(f"no images ({', '.join(IMG_EXTENSIONS)}) under {directory}")
        self.test_transform = T.Compose(
            [T.Resize(image_size * 8 // 7), T.CenterCrop(image_size), T.PILToTensor()]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def fingerprint(self) -> str:
        return fingerprint((Path(path) for path, _ in self.samples), self.directory)

    def images(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        files = ImageFiles([self.samples[i][0] for i in indices], self.test_transform)
        workers = min(8, os.cpu_count() or 1) if len(files) >= 4 * _DECODE_BATCH else 0
        loader = torch.utils.data.DataLoader(files, batch_size=_DECODE_BATCH, num_workers=workers)
        for batch in loader:
            yield batch.numpy()

    def labels(self) -> np.ndarray:
        return np.asarray([label for _, label in self.samples], dtype=np.int64)

    def training_set(self, augment: bool, normalize: Normalize) -> LabeledFiles:
        transform = self.test_transform
        if augment:
            crop = T.RandomResizedCrop(self.image_size)
            transform = T.Compose([crop, T.RandomHorizontalFlip(), T.PILToTensor()])
        paths = [path for path, _ in self.samples]
        return LabeledFiles(ImageFiles(paths, transform), self.labels().tolist(), normalize)


@dataclass(frozen=True)
class Source:
    """How one dataset is found on disk, described to a user, downloaded and opened."""

    locate: Callable[[Path], Path | None]  # data root -> folder holding the files, or None
    expected: Callable[[Path], str]  # data root -> where to put which files (for messages)
    open: Callable[[Path, bool], Split]  # (located folder, train?) -> split
    download: Callable[[Path], object] | None  # fetch into the data root; None: not possible


# --- Fashion-MNIST: gzip (or extracted) IDX files --------------------------------------------

_FASHION_STEMS = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_file(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def _locate_fashion(root: Path) -> Path | None:
    stems = [s for pair in _FASHION_STEMS.values() for s in pair]
    for folder in (root, root / "FashionMNIST" / "raw", FASHION_MNIST_DEBIAN):
        if all(_idx_file(folder, s) for s in stems):
            return folder
    return None


def _open_fashion(folder: Path, train: bool) -> ArraySplit:
    image_file, label_file = (_idx_file(folder, s) for s in _FASHION_STEMS[train])

    def read() -> tuple[np.ndarray, np.ndarray]:
        return read_idx(image_file)[:, None], read_idx(label_file).astype(np.int64)

    return ArraySplit((image_file, label_file), read, pad=2)


FASHION_MNIST = Source(
    locate=_locate_fashion,
    expected=lambda root: (
        f"put {', '.join(s + '.gz' for p in _FASHION_STEMS.values() for s in p)} in {root} "
        f"(or {root / 'FashionMNIST' / 'raw'}), or install the Debian package "
        f"dataset-fashion-mnist (files in {FASHION_MNIST_DEBIAN})"
    ),
    open=_open_fashion,
    download=lambda root: tvd.FashionMNIST(root, train=False, download=True),
)


# --- CIFAR-10/100: python pickle batches, MD5-checked against torchvision's table -----------


def _cifar_source(cls: type[tvd.CIFAR10], label_key: str) -> Source:
    split_files = {True: cls.train_list, False: cls.test_list}
    names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]

    def locate(root: Path) -> Path | None:
        folder = root / cls.base_folder
        return folder if all((folder / n).is_file() for n in names) else None

    def open_split(folder: Path, train: bool) -> ArraySplit:
        entries = [(folder / name, md5) for name, md5 in split_files[train]]

        def read() -> tuple[np.ndarray, np.ndarray]:
            _check_md5(entries)
            return read_cifar([path for path, _ in entries], label_key)

        return ArraySplit(tuple(path for path, _ in entries), read, pad=4)

    return Source(
        locate=locate,
        expected=lambda root: (
            f"extract {cls.filename} ({cls.url}) into {root} so that "
            f"{root / cls.base_folder} holds {', '.join(names)}"
        ),
        open=open_split,
        download=lambda root: cls(root, train=False, download=True),
    )


def _check_md5(entries: Sequence[tuple[Path, str]]) -> None:
    """torchvision's MD5 check of the pickles we are about to load, unless the user opts out."""
    if os.environ.get(SKIP_CHECKSUMS_ENV) == "1":
        log.warning(
            "%s=1: NOT verifying the MD5 of %s against the official release",
            SKIP_CHECKSUMS_ENV, ", ".join(str(p) for p, _ in entries),
        )  # fmt: skip
        return
    bad = [str(path) for path, md5 in entries if not check_integrity(str(path), md5)]
    if bad:
        raise DataMissingError(
            f"{', '.join(bad)} fail(s) the MD5 check of the official release (corrupt or not the "
            f"original files); re-download them, or set {SKIP_CHECKSUMS_ENV}=1 to use them anyway"
        )


# --- Imagenette and ImageNet-100: ImageNet-style folders --------------------------------------

IMAGENETTE_WNIDS = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)  # fmt: skip
IMAGENET100_WNIDS = tuple(
    sorted(resources.files("sweep.tasks").joinpath("imagenet100_classes.txt").read_text().split())
)
_IMAGENETTE_LAYOUTS = ("imagenette2", "imagenette2-320")  # torchvision sizes "full", "320px"
_SPLIT_DIRS = {True: "train", False: "val"}


def _has_classes(folder: Path, wnids: Sequence[str], need_all: bool) -> bool:
    check = all if need_all else any
    return all(check((folder / s / w).is_dir() for w in wnids) for s in _SPLIT_DIRS.values())


def _folder_source(
    wnids: Sequence[str],
    candidates: Callable[[Path], Sequence[Path]],
    need_all: bool,
    expected: Callable[[Path], str],
    download: Callable[[Path], object] | None,
) -> Source:
    def locate(root: Path) -> Path | None:
        return next((f for f in candidates(root) if _has_classes(f, wnids, need_all)), None)

    return Source(
        locate=locate,
        expected=expected,
        open=lambda folder, train: FolderSplit(folder / _SPLIT_DIRS[train], wnids, 224),
        download=download,
    )


IMAGENETTE = _folder_source(
    IMAGENETTE_WNIDS,
    candidates=lambda root: [root / name for name in _IMAGENETTE_LAYOUTS],
    need_all=True,
    expected=lambda root: (
        f"extract imagenette2-320.tgz or imagenette2.tgz (https://github.com/fastai/imagenette) "
        f"into {root} so that {root / 'imagenette2-320'}/{{train,val}}/<wnid>/*.JPEG exist "
        f"for all 10 classes ({', '.join(IMAGENETTE_WNIDS)})"
    ),
    download=lambda root: tvd.Imagenette(root, split="val", size="320px", download=True),
)

IMAGENET100 = _folder_source(
    IMAGENET100_WNIDS,
    candidates=lambda root: [root / "imagenet", root],
    need_all=False,
    expected=lambda root: (
        f"put an ImageNet-1k (ILSVRC2012) tree at {root / 'imagenet'} (or {root}) with "
        f"train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (validation images sorted into class "
        f"folders) for the 100 classes listed in sweep/tasks/imagenet100_classes.txt"
    ),
    download=None,
)

SOURCES: dict[str, Source] = {
    "fashion_mnist": FASHION_MNIST,
    "cifar10": _cifar_source(tvd.CIFAR10, "labels"),
    "cifar100": _cifar_source(tvd.CIFAR100, "fine_labels"),
    "imagenette": IMAGENETTE,
    "imagenet100": IMAGENET100,
}
