"""Readers for the datasets' original on-disk formats.

We read IDX and CIFAR pickle files ourselves instead of going through torchvision's dataset
classes: the sweep needs whole splits as uint8 arrays, and those classes bundle downloads, MD5
checks and a PIL conversion per item.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets.folder import default_loader

from sweep.core.errors import DataMissingError

_IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (plain or gzip), as used by (Fashion-)MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = bytearray(f.read())  # writable, so torch.from_numpy needs no copy
    ndim = data[3] if len(data) >= 4 else 0
    if data[:3] != bytes([0, 0, _IDX_UBYTE]) or ndim == 0:
        raise DataMissingError(f"{path} is not an unsigned-byte IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataMissingError(f"{path} is truncated: {len(data)} bytes")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    values = np.frombuffer(data, np.uint8, offset=header)
    if values.size != int(np.prod(dims)):
        raise DataMissingError(f"{path} is truncated: header {dims}, {values.size} values")
    return values.reshape(dims)


def read_cifar(paths: Sequence[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR python batches -> (uint8 [N,3,32,32], int64 [N]); rows are R, G, B planes of 32x32."""
    data, labels = [], []
    for path in paths:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data.append(np.asarray(batch["data"], dtype=np.uint8))
        labels.extend(batch[label_key])
    return np.concatenate(data).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def fingerprint(paths: Iterable[Path], base: Path) -> str:
    """Identity of source files without reading them: relative path, size and mtime of each."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path.relative_to(base)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class ImageFiles(torch.utils.data.Dataset):
    """Image files decoded with PIL (RGB) and passed through `transform`; no labels."""

    def __init__(self, paths: Sequence[str], transform: Callable) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(default_loader(self.paths[index]))
