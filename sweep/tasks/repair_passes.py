"""Forward passes over the calibration set: the only way repair touches data, counted here.

A repair must cost a small constant number of passes over the calibration set, whatever the number
of repair points. Every pass goes through `forward_pass` or `staged_pass`, which increment the
active `PassCounter`s, so the bench reports counted passes rather than assumed ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sweep.core.errors import UserError

_ACTIVE_COUNTERS: list[PassCounter] = []


@dataclass
class PassCounter:
    """Number of complete forward passes over a calibration set seen while it was active."""

    passes: int = 0


@contextmanager
def count_calibration_passes() -> Iterator[PassCounter]:
    """Count the calibration forward passes run inside the `with` block."""
    counter = PassCounter()
    _ACTIVE_COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _ACTIVE_COUNTERS.remove(counter)


def _count_pass() -> None:
    for counter in _ACTIVE_COUNTERS:
        counter.passes += 1


def calibration_batches(calibration: object, device: torch.device) -> list[torch.Tensor]:
    """Materialise a calibration iterable once (it may be a one-shot generator) on `device`.

    Only float image tensors [N, C, H, W] are accepted: a batch that carries labels (a tuple or a
    dict) is refused, so labels cannot reach repair even by accident.
    """
    if isinstance(calibration, torch.Tensor):
        calibration = [calibration]
    if not isinstance(calibration, Iterable):
        raise UserError(
            f"calibration must be an iterable of image batches, got {type(calibration).__name__}"
        )
    batches = []
    for batch in calibration:
        if not isinstance(batch, torch.Tensor) or not batch.is_floating_point() or batch.dim() != 4:
            what = (
                f"{type(batch).__name__}"
                if not isinstance(batch, torch.Tensor)
                else f"tensor {batch.dtype} of shape {tuple(batch.shape)}"
            )
            raise UserError(
                f"calibration batches must be float image tensors [N, C, H, W] without labels; "
                f"got {what}"
            )
        if len(batch):
            batches.append(batch.to(device))
    if not batches:
        raise UserError("calibration set has no images; repair needs at least one image")
    return batches


def tensors_digest(tensors: Iterable[torch.Tensor]) -> str:
    """sha256 over dtype, shape and bytes of each tensor, in order."""
    digest = hashlib.sha256()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{array.dtype}{tuple(array.shape)}".encode())
        digest.update(array.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def calibration_key(calibration: object, batches: Sequence[torch.Tensor]) -> str:
    """The calibration set's own content key, or a digest of its images when it has none."""
    key = getattr(calibration, "key", None)
    if isinstance(key, str) and key:
        return key
    return "images-sha256:" + tensors_digest(batches)


def forward_pass(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """One plain forward pass of `model` over the calibration batches (caller sets grad mode)."""
    for batch in batches:
        model(batch)
    _count_pass()


@dataclass(frozen=True)
class Stage:
    """A piece of a model's forward: `run` maps the (corrected) previous point to the raw next one.

    `point` names the ChannelAffine that corrects this stage's output (None: no repair point).
    """

    run: Callable[[torch.Tensor], torch.Tensor]
    point: str | None


Visit = Callable[[str, list[torch.Tensor]], list[torch.Tensor]]


def staged_pass(
    stages: Sequence[Stage], batches: Sequence[torch.Tensor], visit: Visit
) -> list[torch.Tensor]:
    """One forward pass, stage by stage, holding a stage's output for the whole calibration set.

    At each repair point `visit(point, chunks)` sees the activations of every calibration image
    and returns what the next stage consumes (e.g. after a correction fitted on them), so point k
    is measured on inputs already corrected at points < k while the total compute stays one pass.
    Peak memory: calibration size x the largest stage output.
    """
    chunks = list(batches)
    for stage in stages:
        chunks = [stage.run(chunk) for chunk in chunks]
        if stage.point is not None:
            chunks = visit(stage.point, chunks)
    _count_pass()
    return chunks


@dataclass(frozen=True)
class Moments:
    """Per-channel mean and (population) variance of an activation, float64 numpy arrays [C]."""

    mean: np.ndarray
    var: np.ndarray

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def pooled(self) -> tuple[float, float]:
        """Mean and variance over all channels together (every channel has the same count)."""
        mean = float(self.mean.mean())
        return mean, max(float((self.var + self.mean**2).mean()) - mean**2, 0.0)


def channel_moments(chunks: Sequence[torch.Tensor]) -> Moments:
    """Per-channel moments over every axis but dim 1 ([N, C] or [N, C, H, W]), in float64."""
    total = 0
    sum1 = sum2 = None
    for chunk in chunks:
        x = chunk.detach().double()
        dims = [d for d in range(x.dim()) if d != 1]
        s1, s2 = x.sum(dims), (x * x).sum(dims)
        sum1 = s1 if sum1 is None else sum1 + s1
        sum2 = s2 if sum2 is None else sum2 + s2
        total += x.numel() // x.shape[1]
    mean = (sum1 / total).cpu().numpy()
    var = np.maximum((sum2 / total).cpu().numpy() - mean**2, 0.0)
    return Moments(mean=mean, var=var)
