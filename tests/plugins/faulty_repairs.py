"""Test-only repair methods that raise, loaded into Ray workers through PRUNE_SWEEP_PLUGINS.

`fail_always` raises on every attempt. `fail_once` raises the first time it runs in a test (it
leaves a marker file in $PRUNE_SWEEP_TEST_MARKERS) and succeeds afterwards, so a grid with one
`fail_once` trial sees that trial fail, get retried, and succeed.
"""

from __future__ import annotations

import os
from pathlib import Path

from sweep.catalog.repair_parameters import NoParams
from sweep.tasks.repair import RepairMethod, register_repair


def _fail_always(model, batches, stats, params) -> None:
    """Test-only: raises RuntimeError on every attempt, to exercise retries and error rows."""
    raise RuntimeError("injected failure")


def _fail_once(model, batches, stats, params) -> None:
    """Test-only: raises on its first run in a test session and succeeds when retried."""
    marker = Path(os.environ["PRUNE_SWEEP_TEST_MARKERS"]) / "failed-once"
    if not marker.exists():
        marker.touch()
        raise RuntimeError("injected first-attempt failure")


register_repair(RepairMethod("fail_always", NoParams, _fail_always, needs_dense=False))
register_repair(RepairMethod("fail_once", NoParams, _fail_once, needs_dense=False))
