"""Small files in each dataset's exact on-disk format (for tests: nothing is downloaded).

Image shapes come from the catalog (`stored_shape`), so the files are what the loaders and the
download command meet in the real releases, only with fewer, random images.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from sweep.catalog.datasets import DATASETS
from sweep.tasks.datasets.synthetic import write_cifar10


def random_images(name: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [count, *stored_shape] of an array dataset (Fashion-MNIST, CIFAR)."""
    return rng.integers(0, 256, (count, *DATASETS[name].stored_shape), dtype=np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzip unsigned-byte IDX file, as the (Fashion-)MNIST releases ship."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fashion_mnist(folder: Path, train: int, test: int, seed: int = 0) -> dict:
    """The four .gz IDX files in `folder`; returns the arrays written (labels count up)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, count in (("train", train), ("t10k", test)):
        images = random_images("fashion_mnist", count, rng)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar(name: str, root: Path, train: int, test: int, seed: int = 0) -> dict:
    """`root/cifar-10-batches-py` or `root/cifar-100-python`; returns the arrays written."""
    rng = np.random.default_rng(seed)
    classes = DATASETS[name].num_classes
    arrays = {
        split: (random_images(name, count, rng), rng.integers(0, classes, count))
        for split, count in (("train", train), ("test", test))
    }
    if name == "cifar10":
        write_cifar10(root, *arrays["train"], *arrays["test"])
        return arrays
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, fine) in arrays.items():
        n = len(images)
        _pickle(
            folder / split,
            {"filenames": [f"{i}.png" for i in range(n)], "batch_label": split,
             "fine_labels": fine.tolist(), "coarse_labels": (fine % 20).tolist(),
             "data": images.reshape(n, -1)},
        )  # fmt: skip
    _pickle(folder / "meta", {"fine_label_names": ["x"] * 100, "coarse_label_names": ["y"] * 20})
    return arrays


def write_jpegs(folder: Path, count: int, seed: int) -> None:
    """`count` random 36x48 RGB JPEGs named like ImageNet's."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{folder.name}_{i}.JPEG", quality=90)


def write_imagenette(folder: Path, per_class: int) -> None:
    """An imagenette2 tree: {train,val}/<wnid>/*.JPEG for all 10 classes, plus its CSV."""
    info = DATASETS["imagenette"]
    for s, split in enumerate(("train", info.test_folder)):
        for c, wnid in enumerate(info.class_ids):
            write_jpegs(folder / split / wnid, per_class, seed=10 * s + c)
    (folder / "noisy_imagenette.csv").write_text("path,noisy_labels_0,is_valid\n")


def tar_gz(folder: Path, archive: Path) -> Path:
    """`folder` packed as `archive` with `folder.name` as its top directory."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
