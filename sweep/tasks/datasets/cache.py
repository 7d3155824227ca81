"""Decode-once cache: uint8 image arrays (+ labels) as .npy files, written atomically.

Files for a base path B: `B.npy` (uint8 [N,C,H,W]), `B.labels.npy` (int64 [N], optional) and
`B.json` (the content key), written last, so its presence means the other files are complete.
Concurrent writers (several trials on one node) each write private temporaries through
`sweep.core.atomic`; the results are identical, so the last one winning is harmless.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from sweep.core.atomic import atomic_path, atomic_write, atomic_write_text

_PROGRESS_MIN = 1000  # show a progress bar from this many images on


def paths(base: Path) -> tuple[Path, Path, Path]:
    """(images, labels, key) files of a cache entry."""
    return tuple(base.with_name(base.name + suffix) for suffix in (".npy", ".labels.npy", ".json"))


class Decoded(NamedTuple):
    """What a cache miss produces; built lazily, so a hit never opens the source files."""

    header: dict  # identity fields hashed into the content key (and kept in the .json)
    shape: tuple[int, ...]  # uint8 [N,C,H,W]
    images: Iterable[np.ndarray]  # chunks along N
    labels: np.ndarray | None


def ensure(base: Path, decode: Callable[[], Decoded], with_labels: bool) -> str:
    """Decode into the cache entry `base` unless it is complete; return its content key.

    The key is a sha256 over the header, the image bytes and the label bytes, so equal content
    has an equal key wherever and whenever it was decoded.
    """
    image_file, label_file, key_file = paths(base)
    needed = (image_file, label_file, key_file) if with_labels else (image_file, key_file)
    if all(path.is_file() for path in needed):
        return json.loads(key_file.read_text())["key"]
    decoded = decode()
    digest = hashlib.sha256(json.dumps(decoded.header, sort_keys=True).encode())
    with atomic_path(image_file) as tmp_images:
        _decode_into(tmp_images, decoded.shape, decoded.images, digest.update, base.name)
    if with_labels:
        labels = np.ascontiguousarray(decoded.labels, dtype=np.int64)
        digest.update(labels)
        atomic_write(label_file, lambda tmp: _save_npy(tmp, labels))
    key = digest.hexdigest()
    atomic_write_text(key_file, json.dumps({**decoded.header, "key": key}))
    return key


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a handle: np.save would append ".npy" to the temporary name
        np.save(f, array)


def _decode_into(
    target: Path,
    shape: tuple[int, ...],
    chunks: Iterable[np.ndarray],
    hash_update: Callable[[np.ndarray], object],
    name: str,
) -> None:
    out = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=shape)
    start = 0
    with tqdm(total=shape[0], desc=f"decoding {name}", unit="img",
              disable=shape[0] < _PROGRESS_MIN) as bar:  # fmt: skip
        for chunk in chunks:
            out[start : start + len(chunk)] = chunk
            hash_update(np.ascontiguousarray(chunk))
            start += len(chunk)
            bar.update(len(chunk))
    out.flush()
    if start != shape[0]:
        raise RuntimeError(f"decoded {start} images for {name}, expected {shape[0]}")
