"""Shared fixtures for the sweep tests: a real dense checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweep.tasks import models


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense ResNet-20 checkpoint for Fashion-MNIST with seeded random weights.

    Trials only need *a* valid checkpoint; its accuracy does not matter to the sweep machinery.
    """
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    model = models.build_model("resnet20", num_classes=10, in_channels=1, image_size=28)
    meta = models.CheckpointMeta(
        arch="resnet20", dataset="fashion_mnist", num_classes=10, in_channels=1, image_size=28
    )
    models.save_checkpoint(model, models.checkpoint_path(root, "fashion_mnist", "resnet20"), meta)
    return root
