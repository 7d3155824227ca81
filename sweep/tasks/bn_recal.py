"""BatchNorm recalibration: refit every BatchNorm's running statistics on the calibration images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sweep.core.errors import UserError
from sweep.tasks.repair_passes import forward_pass


def require_batchnorm(model: nn.Module, method: str) -> None:
    """Refuse, before any work, a method that recalibrates BatchNorm on a model that has none:
    its recalibration would silently do nothing and the result would be mislabelled."""
    if not any(isinstance(m, _BatchNorm) for m in model.modules()):
        raise UserError(
            f"repair method {method!r} recalibrates BatchNorm, but the model "
            f"({type(model).__name__}) has no BatchNorm layer; use 'none' for it"
        )


def bn_recalibrate(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Reset running stats, cumulative average (momentum=None) over one pass, back to eval.

    Same arithmetic as `torch.optim.swa_utils.update_bn`, except that only the BatchNorm layers
    are put in train mode: dropout and other train-time behaviour stay off, so the statistics are
    those of the test-time forward. Momenta are restored; the model ends in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    model.eval()
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        with torch.no_grad():
            forward_pass(model, batches)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()
