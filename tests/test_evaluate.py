"""Evaluation metrics, the BatchNorm-folded fast path, and dense-logit reuse."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from sweep.core.errors import UserError
from sweep.tasks.data import DATASETS, EvalSet
from sweep.tasks.evaluate import (
    Metrics,
    TensorEvalSet,
    evaluate,
    fold_batchnorm,
    metrics_from_logits,
    predict_logits,
)
from sweep.tasks.models import build_model
from sweep.tasks.prune import prune

torch.set_num_threads(1)  # the CPU is shared: one thread avoids OpenMP spin under load


class _Identity3(nn.Module):
    """A toy 'model' whose logits are its (flattened) inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _log_softmax(row: list[float]) -> list[float]:
    norm = math.log(sum(math.exp(v) for v in row))
    return [v - norm for v in row]


def test_metrics_match_hand_computed_values_on_a_toy_model():
    logits = [[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 0.0], [0.0, 0.0, 5.0]]
    dense = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 2.0], [0.0, 0.0, 1.0]]
    labels = [0, 1, 0, 2]
    eval_set = TensorEvalSet(torch.tensor(logits).view(4, 3, 1, 1), torch.tensor(labels))
    metrics = evaluate(_Identity3(), eval_set, dense_logits=torch.tensor(dense))

    nll = -sum(_log_softmax(row)[y] for row, y in zip(logits, labels, strict=True)) / 4
    kl = 0.0
    for p_row, q_row in zip(dense, logits, strict=True):
        log_p, log_q = _log_softmax(p_row), _log_softmax(q_row)
        kl += sum(math.exp(a) * (a - b) for a, b in zip(log_p, log_q, strict=True)) / 4
    # argmax: model 0, 2, 0 (tie -> first), 2; dense 0, 1, 2, 2; labels 0, 1, 0, 2
    assert metrics.top1 == pytest.approx(3 / 4)
    assert metrics.agreement == pytest.approx(2 / 4)
    assert metrics.nll == pytest.approx(nll, rel=1e-6)
    assert metrics.kl == pytest.approx(kl, rel=1e-6)
    assert metrics.top5 is None  # 3 classes
    no_dense = evaluate(_Identity3(), eval_set)
    assert no_dense.agreement is None and no_dense.kl is None
    assert no_dense.to_dict()["top1"] == metrics.top1


def test_top5_with_more_than_ten_classes():
    logits = torch.arange(12.0).repeat(3, 1)  # class 11 best, then 10, 9, 8, 7
    metrics = metrics_from_logits(logits, torch.tensor([11, 7, 6]))
    assert metrics.top1 == pytest.approx(1 / 3)
    assert metrics.top5 == pytest.approx(2 / 3)
    same = metrics_from_logits(logits, torch.tensor([0, 0, 0]), dense_logits=logits)
    assert same.agreement == 1.0 and same.kl == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def pruned_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20", 10, in_channels=1, image_size=28)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28) * 2 + 0.5)
    prune(model, "lamp", 0.8)
    return model.eval()


def test_fold_batchnorm_is_exact_and_keeps_zeros(pruned_resnet):
    x = torch.randn(6, 1, 28, 28)
    before = copy.deepcopy(pruned_resnet.state_dict())
    folded = fold_batchnorm(pruned_resnet, x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), pruned_resnet(x), rtol=1e-4, atol=1e-5)
    for name, value in pruned_resnet.state_dict().items():  # the original is untouched
        assert torch.equal(value, before[name]), name
    zero = pruned_resnet.layer2[0].conv1.weight == 0
    assert zero.float().mean() > 0.5
    assert (folded.layer2[0].conv1.weight[zero] == 0).all()


def test_predict_logits_equals_plain_forward_and_is_reused(pruned_resnet):
    images = torch.randn(37, 1, 28, 28)  # 37: a short last batch
    eval_set = TensorEvalSet(images, torch.randint(0, 10, (37,)))
    dense_logits = predict_logits(pruned_resnet, eval_set)
    with torch.no_grad():
        want = pruned_resnet(images)
    assert dense_logits.dtype == torch.float32 and dense_logits.shape == (37, 10)
    torch.testing.assert_close(dense_logits, want, rtol=1e-4, atol=1e-4)
    metrics = evaluate(pruned_resnet, eval_set, dense_logits=dense_logits)
    assert isinstance(metrics, Metrics)
    assert metrics.agreement == 1.0 and metrics.kl == pytest.approx(0.0, abs=1e-6)
    batched = metrics_from_logits(
        predict_logits(pruned_resnet, eval_set, batch_size=8), eval_set.labels
    )
    assert batched.top1 == metrics.top1


def test_resident_eval_set_matches_streamed_batches(pruned_resnet):
    spec = DATASETS["fashion_mnist"]
    pixels = np.random.default_rng(0).integers(0, 256, (21, 1, 28, 28), dtype=np.uint8)
    labels = np.arange(21, dtype=np.int64) % 10
    resident = EvalSet(images=pixels, labels=labels, spec=spec, key="resident-test")
    streamed = TensorEvalSet(spec.normalize(torch.from_numpy(pixels)), torch.from_numpy(labels))
    want = evaluate(pruned_resnet, streamed)
    for _ in range(2):  # the second call reuses the resident pixels
        assert evaluate(pruned_resnet, resident) == want


def test_bad_inputs(pruned_resnet):
    eval_set = TensorEvalSet(torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    with pytest.raises(
        UserError, match=r"dense logits \(3, 10\) do not match the model's \(4, 10\)"
    ):
        evaluate(pruned_resnet, eval_set, dense_logits=torch.zeros(3, 10))
    empty = TensorEvalSet(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    with pytest.raises(UserError, match="eval set has no images"):
        evaluate(pruned_resnet, empty)
    with pytest.raises(UserError, match=r"must be \[N, K\] and \[N\]"):
        metrics_from_logits(torch.zeros(4, 10), torch.zeros(3, dtype=torch.long))
