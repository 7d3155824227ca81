"""Shared fixtures for the sweep tests: real dense checkpoints, two replicates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweep.tasks import models
from sweep.tasks.datasets.holdout import holdout


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dense ResNet-20 checkpoints for Fashion-MNIST, replicates 0 and 1, with weights seeded by
    the replicate (random, not trained: trials only need valid checkpoints, not accurate ones)."""
    root = tmp_path_factory.mktemp("checkpoints")
    for replicate in (0, 1):
        torch.manual_seed(replicate)
        model = models.build_model("resnet20", num_classes=10, in_channels=1, image_size=28)
        meta = models.CheckpointMeta(
            arch="resnet20", dataset="fashion_mnist", num_classes=10, in_channels=1,
            image_size=28, seed=replicate, held_out=holdout("fashion_mnist", 60000).record(),
        )  # fmt: skip
        path = models.checkpoint_path(root, "fashion_mnist", "resnet20", replicate)
        models.save_checkpoint(model, path, meta)
    return root
