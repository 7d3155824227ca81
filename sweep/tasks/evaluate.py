"""Evaluation: accuracy, cross-entropy and label-free fidelity to the dense model.

The fast path evaluates a copy of the model with every BatchNorm that directly follows a conv
folded into that conv (exact in eval mode; pruned zeros stay zero), in channels_last, under
`torch.inference_mode`, with bf16 autocast on CUDA only. A `data.EvalSet`'s uint8 pixels stay
resident on the device between calls (one eval set per process) and are normalised there.
`compile=True` adds `torch.compile` on top; measured on ResNet-20 / Fashion-MNIST it costs a
16-32 s compile once per process and gained 0.7-1.15x on the shared 2-core CPU, 1.3x on an
H200, so it is off by default.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import chain
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval

from sweep.core.errors import UserError

EVAL_BATCH_SIZE = 500


class EvalBatches(Protocol):
    def batches(self, batch_size: int = ...) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class TensorEvalSet:
    """An eval set over in-memory float images and int labels (benches, tests, synthetic data)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise UserError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.images[start : start + batch_size], self.labels[start : start + batch_size]


@dataclass(frozen=True)
class Metrics:
    """top1/top5 in [0, 1]; nll: mean cross-entropy (nats); agreement: top-1 agreement with the
    dense predictions; kl: mean KL(dense || model) in nats. top5 is None for <= 10 classes,
    agreement and kl are None without dense logits."""

    top1: float
    top5: float | None
    nll: float
    agreement: float | None
    kl: float | None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def metrics_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, dense_logits: torch.Tensor | None = None
) -> Metrics:
    """Metrics of [N, K] logits against int labels [N] (and the dense model's logits)."""
    if logits.dim() != 2 or len(logits) != len(labels) or not len(labels):
        raise UserError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must be [N, K] and [N]"
        )
    logits, labels = logits.double(), labels.long()
    classes = logits.shape[1]
    top1 = (logits.argmax(1) == labels).double().mean().item()
    top5 = None
    if classes > 10:
        top5 = (logits.topk(5, dim=1).indices == labels[:, None]).any(1).double().mean().item()
    nll = F.cross_entropy(logits, labels).item()
    agreement = kl = None
    if dense_logits is not None:
        if dense_logits.shape != logits.shape:
            raise UserError(
                f"dense logits {tuple(dense_logits.shape)} do not match the model's "
                f"{tuple(logits.shape)}: were they computed on the same eval set?"
            )
        dense_logits = dense_logits.double()
        agreement = (logits.argmax(1) == dense_logits.argmax(1)).double().mean().item()
        dense_log_p = F.log_softmax(dense_logits, 1)
        kl = (dense_log_p.exp() * (dense_log_p - F.log_softmax(logits, 1))).sum(1).mean().item()
    return Metrics(top1=top1, top5=top5, nll=nll, agreement=agreement, kl=kl)


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(conv, bn) names where the BatchNorm's input is that conv's output tensor, found by a
    forward on `example` (data flow, not naming conventions)."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):

            def record(mod, inputs, output, name=name):
                produced[id(output)] = (name, output)

            handles.append(module.register_forward_hook(record))
        elif isinstance(module, nn.BatchNorm2d):

            def match(mod, inputs, name=name):
                if id(inputs[0]) in produced and produced[id(inputs[0])][1] is inputs[0]:
                    pairs.append((produced[id(inputs[0])][0], name))

            handles.append(module.register_forward_pre_hook(match))
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(pairs))


_PAIRS: dict[tuple, list[tuple[str, str]]] = {}


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """An eval-mode copy of `model` with each conv -> BatchNorm pair folded into the conv."""
    folded = copy.deepcopy(model).eval()
    structure = (
        type(model),
        tuple(example.shape[1:]),
        tuple((name, type(module)) for name, module in model.named_modules()),
    )
    if structure not in _PAIRS:  # the same structure has the same data flow: trace it once
        _PAIRS[structure] = _conv_bn_pairs(folded, example[:2])
    for conv_name, bn_name in _PAIRS[structure]:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        assert isinstance(bn, _BatchNorm)
        _replace(folded, conv_name, fuse_conv_bn_eval(conv, bn))
        _replace(folded, bn_name, nn.Identity())
    return folded


def eval_precision(device: torch.device) -> str:
    """The default precision on `device`: 'bf16' autocast on CUDA, else 'fp32'. Part of every
    trial's key and of the dense-logits cache key, so results of the two never mix."""
    return "bf16" if device.type == "cuda" else "fp32"


def _autocast(device: torch.device, precision: str):
    """bf16 autocast where asked for (the GPU check measures its top-1 cost against fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def predict_logits(
    model: nn.Module,
    eval_set: EvalBatches,
    device: str | torch.device = "cpu",
    compile: bool = False,
    batch_size: int = EVAL_BATCH_SIZE,
    precision: str | None = None,
) -> torch.Tensor:
    """float32 CPU logits [N, K] of `model` on the eval set (the model itself is not modified).

    Compute once per dense checkpoint and pass to `evaluate` as `dense_logits`. `precision`:
    'fp32' or 'bf16'; None takes `eval_precision(device)`.
    """
    device = torch.device(device)
    logits, _ = _predict(
        model, eval_set, device, compile, batch_size, precision or eval_precision(device)
    )
    return logits


# One eval set's uint8 images (and labels) per process, on the device it was last used on.
_RESIDENT: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _resident(eval_set: object, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A data.EvalSet's images as one uint8 tensor on `device`, cached by its content key, so
    evaluating many models moves and copies the pixels once; None for other eval sets."""
    images, key = getattr(eval_set, "images", None), getattr(eval_set, "key", None)
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and isinstance(key, str)):
        return None
    if (key, str(device)) not in _RESIDENT:
        _RESIDENT.clear()
        pixels = torch.from_numpy(np.array(images)).to(device)  # copy: the memmap is read-only
        _RESIDENT[key, str(device)] = (pixels, torch.from_numpy(np.asarray(eval_set.labels)))
    return _RESIDENT[key, str(device)]


def _device_batches(
    eval_set: EvalBatches, device: torch.device, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float images on `device`, CPU labels) batches: resident pixels normalised on the device,
    or the eval set's own batches moved one by one."""
    resident = _resident(eval_set, device)
    if resident is None:
        for images, labels in eval_set.batches(batch_size):
            yield images.to(device, non_blocking=True), labels
        return
    pixels, labels = resident
    for start in range(0, len(labels), batch_size):
        end = start + batch_size
        yield eval_set.spec.normalize(pixels[start:end]), labels[start:end]


def _predict(
    model: nn.Module,
    eval_set: EvalBatches,
    device: torch.device,
    compile: bool,
    batch_size: int,
    precision: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    batches = _device_batches(eval_set, device, batch_size)
    first = next(batches, None)
    if first is None:
        raise UserError("eval set has no images")
    images, _ = first
    fast = fold_batchnorm(model, images).to(device, memory_format=torch.channels_last)
    forward = torch.compile(fast) if compile else fast
    outputs, labels = [], []
    with torch.inference_mode(), _autocast(device, precision):
        for images, batch_labels in chain([first], batches):
            count = len(images)
            x = images.contiguous(memory_format=torch.channels_last)
            if compile and count < batch_size:  # one static shape: no recompile for the tail
                x = torch.cat([x, x.new_zeros((batch_size - count, *x.shape[1:]))])
            outputs.append(forward(x)[:count].float())
            labels.append(batch_labels)
    return torch.cat(outputs).cpu(), torch.cat(labels).cpu()


@dataclass(frozen=True)
class Evaluation:
    """Metrics plus each image's outcome, so two trials on the same images compare paired."""

    metrics: Metrics
    predictions: np.ndarray  # uint16 predicted class per image, eval-set order
    correct: np.ndarray  # bool per image
    precision: str  # eval_precision(): 'fp32' or 'bf16'

    def packed_correct(self) -> bytes:
        """The correctness bits as numpy.packbits bytes (big-endian bit order)."""
        return np.packbits(self.correct).tobytes()


def evaluate_per_image(
    model: nn.Module,
    eval_set: EvalBatches,
    dense_logits: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    compile: bool = False,
    precision: str | None = None,
) -> Evaluation:
    """`evaluate`, keeping every image's predicted class and whether it was right."""
    device = torch.device(device)
    precision = precision or eval_precision(device)
    logits, labels = _predict(model, eval_set, device, compile, EVAL_BATCH_SIZE, precision)
    predicted = logits.argmax(1)
    return Evaluation(
        metrics=metrics_from_logits(logits, labels, dense_logits),
        predictions=predicted.numpy().astype(np.uint16),
        correct=(predicted == labels.long()).numpy(),
        precision=precision,
    )


def evaluate(
    model: nn.Module,
    eval_set: EvalBatches,
    dense_logits: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    compile: bool = False,
) -> Metrics:
    """Metrics of `model` on the eval set; fidelity metrics when the dense logits are given."""
    return evaluate_per_image(model, eval_set, dense_logits, device, compile).metrics
