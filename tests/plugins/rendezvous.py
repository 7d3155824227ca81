"""Test-only repair `rendezvous`: each trial waits until another trial is running at once.

Loaded into Ray workers through PRUNE_SWEEP_PLUGINS. On a cluster whose worker nodes have one CPU
each and trials that ask for one CPU, two trials running at once are on two different nodes, so
a sweep of these trials must spread over both: a property Ray guarantees, unlike how it happens
to place trials that could all run on one node. Each trial drops a file named after its process
into $PRUNE_SWEEP_TEST_MARKERS and waits (bounded) until a file of another process is there.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sweep.catalog.repair_parameters import NoParams
from sweep.tasks.repair import RepairMethod, register_repair

WAIT_S = 60.0


def _rendezvous(model, batches, stats, params) -> None:
    """Test-only: blocks until a trial in another process has started too (at most WAIT_S)."""
    markers = Path(os.environ["PRUNE_SWEEP_TEST_MARKERS"])
    (markers / f"pid-{os.getpid()}").touch()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if any(p.name != f"pid-{os.getpid()}" for p in markers.glob("pid-*")):
            return
        time.sleep(0.05)
    raise RuntimeError("no other trial ran at the same time")


register_repair(RepairMethod("rendezvous", NoParams, _rendezvous, needs_dense=False))
