"""Test-only repairs that show how a restarted trial resumes its cells, loaded through
PRUNE_SWEEP_PLUGINS into Ray workers.

`log_run` appends the pruned model's density to $PRUNE_SWEEP_TEST_MARKERS/runs.log each time it
runs, so a test can count which cells really ran. `crash_if_sparse` kills its worker process
(as a lost node or an out-of-memory kill would) the first time it meets a model below 20 %
density, and does nothing afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sweep.catalog.repair_parameters import NoParams
from sweep.tasks.repair import RepairMethod, register_repair


def _density(model: torch.nn.Module) -> float:
    weights = [
        m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    return float(sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights))


def _markers() -> Path:
    return Path(os.environ["PRUNE_SWEEP_TEST_MARKERS"])


def _log_run(model, batches, stats, params) -> None:
    """Test-only: records that it ran, and on which pruned model."""
    with open(_markers() / "runs.log", "a") as log:
        log.write(f"{_density(model):.3f}\n")


def _crash_if_sparse(model, batches, stats, params) -> None:
    """Test-only: ends the worker process once, on the first model below 20 % density."""
    marker = _markers() / "crashed"
    if _density(model) < 0.2 and not marker.exists():
        marker.touch()
        os._exit(1)


register_repair(RepairMethod("log_run", NoParams, _log_run, needs_dense=False))
register_repair(RepairMethod("crash_if_sparse", NoParams, _crash_if_sparse, needs_dense=False))
