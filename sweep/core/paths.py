"""Where things live by default, and how a dense checkpoint's file is named: written once here.

Every command, the demo, the benchmarks and the preflight take their defaults from this module,
so a folder renamed here is renamed everywhere (docs/architecture.md, "Where each fact lives").
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINTS = Path("checkpoints")  # dense checkpoints: <CHECKPOINTS>/<dataset>/<arch>-seed<N>.pt
DATA_ROOT = Path("data")  # dataset files (fashion_mnist also looks in Debian's folder)
RESULTS = Path("results")  # result stores: <RESULTS>/<grid name>
CACHE_ENV = "PRUNE_SWEEP_CACHE"  # the node-local artefact cache, when set


def default_cache_dir() -> Path:
    """$PRUNE_SWEEP_CACHE, else ~/.cache/prune-sweep: resolved on the node that uses it, so
    every node of a cluster keeps its own cache, whatever a worker's working directory is."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "prune-sweep")


def checkpoint_file(checkpoint_dir: Path | str, dataset: str, arch: str, replicate: int) -> Path:
    """``<dir>/<dataset>/<arch>-seed<replicate>.pt``: one file per replicate (its JSON sidecar
    sits beside it with the suffix ``.json``)."""
    return Path(checkpoint_dir) / dataset / f"{arch}-seed{replicate}.pt"


def default_store(grid_name: str) -> Path:
    """The result store a grid writes when no --store is given."""
    return RESULTS / grid_name
