"""Helpers for the sweep tests (not fixtures): a skip marker and small grid files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweep.tasks import data

FASHION_MNIST = data.find_data("fashion_mnist") is not None
needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST,
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def write_grid(path: Path, **fields: object) -> Path:
    """A small Fashion-MNIST grid file; `fields` override the defaults."""
    grid = {
        "datasets": ["fashion_mnist"],
        "archs": ["resnet20"],
        "allocations": ["erk", "lamp"],
        "sparsities": [0.5, 0.9],
        "repairs": ["none", "bn_recal"],
        "seeds": [0],
        "calib_size": 32,
        "eval_limit": 64,
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0},
    } | fields
    path.write_text(yaml.safe_dump(grid))
    return path
