"""Where each dataset's files live and how to open a split; the facts come from the catalog.

A split exposes images and labels separately so that the calibration set can be built from
images alone. Opening a split is cheap (file listing only); decoding happens on demand.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torchvision import datasets as tvd
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.datasets.utils import check_integrity

from sweep.catalog.datasets import DATASETS, DatasetInfo
from sweep.core.errors import DataMissingError
from sweep.tasks.datasets.download import SKIP_CHECKSUMS_ENV
from sweep.tasks.datasets.formats import ImageFiles, fingerprint, read_cifar, read_idx
from sweep.tasks.datasets.training import AugmentedArrays, LabeledFiles, Normalize

log = logging.getLogger(__name__)

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
    """How one dataset is found on disk, described to a user, and opened."""

    locate: Callable[[Path], Path | None]  # data root -> folder holding the files, or None
    expected: Callable[[Path], str]  # data root -> where to put which files (for messages)
    open: Callable[[Path, bool], Split]  # (located folder, train?) -> split


def _download_folder(info: DatasetInfo, root: Path) -> list[Path]:
    """The folder `python -m sweep.data download` fills, when the dataset has a download."""
    return [root / info.download.folder] if info.download is not None else []


# --- Fashion-MNIST: gzip (or extracted) IDX files --------------------------------------------

_FASHION = DATASETS["fashion_mnist"]
_FASHION_STEMS = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_file(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def _locate_fashion(root: Path) -> Path | None:
    stems = [s for pair in _FASHION_STEMS.values() for s in pair]
    for folder in (root, *_download_folder(_FASHION, root), FASHION_MNIST_DEBIAN):
        if all(_idx_file(folder, s) for s in stems):
            return folder
    return None


def _open_fashion(folder: Path, train: bool) -> ArraySplit:
    image_file, label_file = (_idx_file(folder, s) for s in _FASHION_STEMS[train])

    def read() -> tuple[np.ndarray, np.ndarray]:
        return read_idx(image_file)[:, None], read_idx(label_file).astype(np.int64)

    return ArraySplit((image_file, label_file), read, pad=_FASHION.crop_padding)


FASHION_MNIST = Source(
    locate=_locate_fashion,
    expected=lambda root: (
        f"put {', '.join(s + '.gz' for p in _FASHION_STEMS.values() for s in p)} in {root} "
        f"(or {_download_folder(_FASHION, root)[0]}), or install the Debian package "
        f"dataset-fashion-mnist (files in {FASHION_MNIST_DEBIAN})"
    ),
    open=_open_fashion,
)


# --- CIFAR-10/100: python pickle batches, MD5-checked against torchvision's table -----------


def _cifar_source(info: DatasetInfo, cls: type[tvd.CIFAR10], label_key: str) -> Source:
    """`cls` contributes torchvision's per-file MD5 table of the unpacked pickles."""
    split_files = {True: cls.train_list, False: cls.test_list}
    names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    (archive,) = info.download.archives

    def locate(root: Path) -> Path | None:
        (folder,) = _download_folder(info, root)
        return folder if all((folder / n).is_file() for n in names) else None

    def open_split(folder: Path, train: bool) -> ArraySplit:
        entries = [(folder / name, md5) for name, md5 in split_files[train]]

        def read() -> tuple[np.ndarray, np.ndarray]:
            _check_md5(entries)
            return read_cifar([path for path, _ in entries], label_key)

        return ArraySplit(tuple(path for path, _ in entries), read, pad=info.crop_padding)

    return Source(
        locate=locate,
        expected=lambda root: (
            f"extract {archive.filename} ({archive.url}) into {root} so that "
            f"{_download_folder(info, root)[0]} holds {', '.join(names)}"
        ),
        open=open_split,
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


def _has_classes(folder: Path, info: DatasetInfo, need_all: bool) -> bool:
    check = all if need_all else any
    return all(
        check((folder / split / w).is_dir() for w in info.class_ids)
        for split in ("train", info.test_folder)
    )


def _folder_source(
    info: DatasetInfo,
    candidates: Callable[[Path], Sequence[Path]],
    need_all: bool,
    expected: Callable[[Path], str],
) -> Source:
    def locate(root: Path) -> Path | None:
        return next((f for f in candidates(root) if _has_classes(f, info, need_all)), None)

    def open_split(folder: Path, train: bool) -> FolderSplit:
        directory = folder / ("train" if train else info.test_folder)
        return FolderSplit(directory, info.class_ids, info.image_size)

    return Source(locate=locate, expected=expected, open=open_split)


_IMAGENETTE = DATASETS["imagenette"]
IMAGENETTE = _folder_source(
    _IMAGENETTE,
    # the full-size release, then the 320 px one (what a download fetches)
    candidates=lambda root: [root / "imagenette2", *_download_folder(_IMAGENETTE, root)],
    need_all=True,
    expected=lambda root: (
        f"extract imagenette2-320.tgz or imagenette2.tgz (https://github.com/fastai/imagenette) "
        f"into {root} so that {root / 'imagenette2-320'}/{{train,val}}/<wnid>/*.JPEG exist "
        f"for all 10 classes ({', '.join(_IMAGENETTE.class_ids)})"
    ),
)

IMAGENET100 = _folder_source(
    DATASETS["imagenet100"],
    candidates=lambda root: [root / "imagenet", root],
    need_all=False,
    expected=lambda root: (
        f"put an ImageNet-1k (ILSVRC2012) tree at {root / 'imagenet'} (or {root}) with "
        f"train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (validation images sorted into class "
        f"folders) for the 100 classes listed in sweep/tasks/imagenet100_classes.txt"
    ),
)

SOURCES: dict[str, Source] = {
    "fashion_mnist": FASHION_MNIST,
    "cifar10": _cifar_source(DATASETS["cifar10"], tvd.CIFAR10, "labels"),
    "cifar100": _cifar_source(DATASETS["cifar100"], tvd.CIFAR100, "fine_labels"),
    "imagenette": IMAGENETTE,
    "imagenet100": IMAGENET100,
}
