"""Node-local, content-keyed cache of the artefacts that trials share.

Every trial on a node needs the same dense eval logits, dense calibration statistics and masks as
many other trials. They are computed once per node: the first trial takes a file lock for the key,
computes and writes the file atomically; trials arriving meanwhile wait on the lock and then read
the file. A small in-process memo serves repeats inside one worker (when Tune reuses actors), but
correctness never depends on actor reuse. Files are torch-serialised plain containers of tensors
and load with `weights_only=True`.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sweep.core.atomic import atomic_write
from sweep.core.paths import default_cache_dir

FILL_LOG = "fills.log"
_MEMO_ENTRIES = 16


class ArtifactCache:
    """get_or_create(kind, key, compute) with a per-key file lock and an in-process memo."""

    _memo: OrderedDict[tuple[str, str, str], Any] = OrderedDict()

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def memo(self, kind: str, key: str, compute: Callable[[], Any]) -> Any:
        """In-process only: for values that are cheap to rebuild from a file (a loaded model)."""
        memo_key = (str(self.root), kind, key)
        if memo_key not in self._memo:
            self._remember(memo_key, compute())
        self._memo.move_to_end(memo_key)
        return self._memo[memo_key]

    def _remember(self, memo_key: tuple[str, str, str], value: Any) -> None:
        self._memo[memo_key] = value
        while len(self._memo) > _MEMO_ENTRIES:
            self._memo.popitem(last=False)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.pt"

    def get_or_create(self, kind: str, key: str, compute: Callable[[], Any]) -> Any:
        return self.memo(kind, key, lambda: self._load_or_fill(kind, key, compute))

    def _load_or_fill(self, kind: str, key: str, compute: Callable[[], Any]) -> Any:
        path = self.path(kind, key)
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():  # another process filled it while we waited
                return torch.load(path, map_location="cpu", weights_only=True)
            start = time.perf_counter()
            value = compute()
            atomic_write(path, lambda tmp: torch.save(value, tmp))
            self._log_fill(kind, key, time.perf_counter() - start)
        return value

    def _log_fill(self, kind: str, key: str, seconds: float) -> None:
        """One line per computed artefact: lets users (and tests) see what each node filled."""
        with open(self.root / FILL_LOG, "a") as log:
            log.write(f"{kind}\t{key}\t{os.getpid()}\t{seconds:.3f}\n")

    def fills(self) -> list[tuple[str, str]]:
        log = self.root / FILL_LOG
        if not log.exists():
            return []
        return [tuple(line.split("\t")[:2]) for line in log.read_text().splitlines()]
