"""One way to write a file so that readers see either the old file or the whole new one.

Every artefact the project writes (result Parquet files, checkpoints and their sidecars, cache
entries, eval-set caches) goes through `atomic_write`: the content is written to a hidden
temporary name in the same directory, flushed to disk, then renamed over the target. A process
killed half-way leaves only a `.*.tmp` file, which readers never open (their names start with
'.') and `ResultStore.remove_stale_temporaries` cleans up.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_path(target: Path) -> Path:
    """A unique hidden name next to `target` (same file system, so the rename is atomic)."""
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


@contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed onto `target`.

    On an exception the temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(target: Path | str, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)`, then move the finished file onto `target`; returns `target`."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


def atomic_write_text(target: Path | str, text: str) -> Path:
    return atomic_write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
