"""How to run a grid: the launcher's options, each written once (its flag derives from it).

`LaunchOptions` is both the keyword arguments of `sweep.run.launcher.run_grid` and the flags of
`python -m sweep.launch` (`sweep.core.arguments.add_option_flags`), so a default or a help text
lives only in its field here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sweep.core import paths
from sweep.core.arguments import option
from sweep.core.errors import UserError
from sweep.plan.cells import MAX_TRIALS, check_cells_per_trial
from sweep.plan.grid import Grid
from sweep.plan.identity import EVAL_PRECISIONS

PRECISION_CHOICES = ("auto", *EVAL_PRECISIONS)
PRETRAIN_CHOICES = ("auto", "never")


@dataclass
class LaunchOptions:
    """How to run a grid; the CLI's flags, and the keyword arguments of `run_grid`."""

    store: Path | None = option(None, f"result store directory (default: {paths.RESULTS}/<grid>)")
    checkpoints: Path = option(paths.CHECKPOINTS, "dense checkpoints folder")
    data_root: Path | None = option(None, f"where datasets live (default: ./{paths.DATA_ROOT})")
    cache_dir: Path | None = option(None, "node-local artefact cache (default: per node)")
    address: str | None = option(
        None, "join an existing Ray cluster ('auto' or HOST:PORT); default: start Ray locally"
    )
    gpus_per_trial: float | None = option(None, "GPUs per trial (fractions pack)")
    cpus_per_trial: float | None = option(None, "CPUs per trial")
    max_concurrent: int | None = option(None, "at most this many trials at once")
    cells_per_trial: int | None = option(
        None,
        "cells (every point of one pruned model) run by one Tune trial; default: 1, or as many "
        f"as keep a large grid at {MAX_TRIALS} trials",
    )
    eval_precision: str = option(
        "auto",
        "arithmetic of the eval passes, part of every trial's key; auto: bf16 autocast when "
        "trials get GPUs (a local CUDA device, or --address with --gpus-per-trial), else fp32",
        choices=PRECISION_CHOICES,
    )
    retries: int = option(2, "retries of a failing trial")
    restart: bool = option(
        False, "start over in a new store (the old one is moved aside, never deleted)"
    )
    pretrain: str = option(
        "never",
        "auto: train missing dense checkpoints first, as Ray tasks",
        choices=PRETRAIN_CHOICES,
    )
    download: bool = option(False, "download missing datasets first (see python -m sweep.data)")

    def store_for(self, grid: Grid) -> Path:
        return self.store or paths.default_store(grid.name)

    def requested_gpus(self, grid: Grid) -> float:
        """GPUs per trial as asked for: the flag, else the grid's resources."""
        if self.gpus_per_trial is not None:
            return self.gpus_per_trial
        return grid.resources.get("gpus_per_trial", 0.0)

    def precision(self, grid: Grid) -> str:
        """The trials' eval precision, decided before planning since it is part of every key."""
        if self.eval_precision != "auto":
            return self.eval_precision
        if self.requested_gpus(grid) > 0 and (self.address is not None or _local_cuda()):
            return "bf16"
        return "fp32"

    def check(self) -> None:
        """Bad values, each named, before anything else happens."""
        for name in ("gpus_per_trial", "cpus_per_trial"):
            value = getattr(self, name)
            if value is not None and not (0 <= value < math.inf):
                raise UserError(
                    f"--{name.replace('_', '-')} {value}; expected a finite number, at least 0"
                )
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise UserError(f"--max-concurrent {self.max_concurrent} must be at least 1")
        if self.retries < 0:
            raise UserError(f"--retries {self.retries} must not be negative")
        if self.pretrain not in PRETRAIN_CHOICES:
            raise UserError(f"--pretrain {self.pretrain!r}; expected auto or never")
        if self.eval_precision not in PRECISION_CHOICES:
            expected = ", ".join(PRECISION_CHOICES)
            raise UserError(f"--eval-precision {self.eval_precision!r}; expected one of {expected}")
        check_cells_per_trial(self.cells_per_trial)
        if self.store is not None and self.store.exists() and not self.store.is_dir():
            raise UserError(f"--store {self.store} is a file; a result store is a directory")


def _local_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
