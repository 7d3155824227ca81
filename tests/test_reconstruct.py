"""Layer-wise repairs: obs_reconstruct (masked least squares) and adaprune (masked Adam)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn
from torchvision.models import DenseNet

from sweep.catalog.repair_parameters import AdaPruneParams
from sweep.core.errors import UserError
from sweep.tasks import reconstruct
from sweep.tasks.adaprune import adaprune_layers
from sweep.tasks.models import build_model
from sweep.tasks.prune import prune
from sweep.tasks.reconstruct import (
    LayerStats,
    ObsParams,
    flat_weight,
    masked_least_squares,
    obs_reconstruct,
    peak_gram_floats,
    refit_layers,
)
from sweep.tasks.repair import count_calibration_passes, repair

torch.set_num_threads(1)  # the CPU is shared: one thread avoids OpenMP spin under load


def _images(count: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _linear_model(mask: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    """(dense, pruned): Flatten -> Linear -> BatchNorm1d, the pruned Linear masked by `mask`."""
    torch.manual_seed(0)
    out, d = mask.shape
    dense = nn.Sequential(nn.Flatten(), nn.Linear(d, out), nn.BatchNorm1d(out)).eval()
    pruned = copy.deepcopy(dense)
    with torch.no_grad():
        pruned[1].weight.mul_(mask)
    return dense, pruned


def _mask(out: int = 6, d: int = 16) -> torch.Tensor:
    mask = torch.rand(out, d, generator=torch.Generator().manual_seed(1)) < 0.4
    mask[0] = True  # a dense row
    mask[1] = False  # a dead row
    mask[3] = mask[2]  # two rows sharing one mask: one factorisation
    return mask


@pytest.mark.parametrize("damping", [0.05, 1e-9, 0.0])
def test_single_linear_equals_closed_form_held_to_the_dense_weights(damping):
    mask = _mask()
    dense, pruned = _linear_model(mask)
    zero = int(mask[2].nonzero()[0])
    with torch.no_grad():  # a kept weight that is exactly zero: the pruning step kept it
        dense[1].weight[2, zero] = 0.0
        pruned[1].weight[2, zero] = 0.0
    images = _images(64, 1, 4)
    repaired = repair(
        pruned,
        "obs_reconstruct",
        list(images.split(20)),
        dense=dense,
        masks={"1": mask},
        damping=damping,
    )

    x = images.reshape(64, -1).double().numpy()
    w_dense = dense[1].weight.detach().double().numpy()
    targets = x @ w_dense.T  # both layers share the bias: it cancels
    gram = x.T @ x
    lam = damping * np.mean(np.diag(gram))
    want = np.zeros_like(w_dense)
    for row, kept in enumerate(mask.numpy()):
        if not kept.any():
            continue
        system = gram[np.ix_(kept, kept)] + lam * np.eye(kept.sum())
        rhs = x[:, kept].T @ targets[:, row] + lam * w_dense[row, kept]
        want[row, kept] = np.linalg.solve(system, rhs)
        if damping < 1e-6:  # undamped: the plain least-squares solution of the row
            plain = np.linalg.lstsq(x[:, kept], targets[:, row], rcond=None)[0]
            np.testing.assert_allclose(want[row, kept], plain, rtol=1e-5, atol=1e-7)
    got = repaired[1].weight.detach().double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert (repaired[1].weight[~mask] == 0).all() and (repaired[1].weight[1] == 0).all()
    assert repaired[1].weight[2, zero] != 0  # kept, so refitted like the others
    assert not torch.equal(repaired[2].running_mean, dense[2].running_mean)  # BN recalibrated
    assert torch.equal(pruned[1].weight, dense[1].weight * mask)  # the input is untouched


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20", 10, in_channels=1, image_size=28).eval()
    update_bn(list(_images(32, 1, 28, seed=7).split(16)), model)  # non-trivial BN statistics
    return model.eval()


def _layer_errors(model: nn.Module, dense: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """|layer output - dense layer output|^2 of every Conv2d/Linear, each model on its own
    prefix, measured with forward hooks on the ordinary forward."""
    outputs: dict[nn.Module, dict[str, torch.Tensor]] = {}
    for net in (model, dense):
        seen = outputs.setdefault(net, {})
        handles = [
            module.register_forward_hook(lambda m, i, o, n=name, s=seen: s.setdefault(n, o))
            for name, module in net.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear))
        ]
        with torch.no_grad():
            net(images)
        for handle in handles:
            handle.remove()
    ours, theirs = outputs[model], outputs[dense]
    return {n: float((ours[n] - theirs[n]).double().pow(2).sum()) for n in theirs}


def test_obs_lowers_every_layer_error_on_a_pruned_resnet20(resnet20):
    pruned = copy.deepcopy(resnet20)
    masks = prune(pruned, "erk", 0.9).masks
    images = _images(48, 1, 28, seed=3)
    batches = list(images.split(16))

    # While refitting: each layer's statistics describe exactly the error a forward shows, and
    # the refit lowers it, on the prefix as reconstructed so far.
    model, seen = copy.deepcopy(pruned), {}

    def fit(name: str, weight, mask, stats: LayerStats) -> torch.Tensor:
        measured = _layer_errors(model, resnet20, images)[name]
        error = float(stats.squared_error_and_gradient(weight)[0])
        assert error == pytest.approx(measured, rel=1e-5, abs=1e-9 * float(stats.target_sq))
        new = masked_least_squares(stats, weight, mask, 0.01)
        seen[name] = (stats.relative_error(weight), stats.relative_error(new * mask))
        return new

    refit_layers(model, resnet20, batches, fit)
    assert set(seen) == set(masks)
    exact = [n for n, (before, _) in seen.items() if before < 1e-9]
    assert exact == ["conv1"]  # ERK leaves the stem dense and its inputs are the images
    assert seen["conv1"][1] < 1e-12  # held to the dense weights, an exact layer stays exact
    assert all(after < before for n, (before, after) in seen.items() if n not in exact), seen

    # End to end, each model on its own prefix: lower than the pruned model's at every layer.
    unrepaired = _layer_errors(pruned, resnet20, images)
    kept = repair(pruned, "obs_reconstruct", batches, dense=resnet20, recal_after=False)
    refitted = _layer_errors(kept, resnet20, images)
    improved = [n for n in masks if n not in exact]
    assert all(refitted[n] < unrepaired[n] for n in improved), (refitted, unrepaired)
    assert refitted["fc"] < 0.1 * unrepaired["fc"]
    for name, mask in masks.items():
        assert (kept.get_submodule(name).weight[~mask] == 0).all(), name


def _layer_io(model: nn.Module, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
    """Every Conv2d/Linear's (input, output) on `images`, each on its own model's prefix."""
    seen: dict[str, tuple[torch.Tensor, ...]] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen.setdefault(name, (inputs[0], output))

        return hook

    handles = [
        module.register_forward_hook(keep(name))
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return seen


def _rows(
    layer: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """(X [positions, d], Y [positions, out]) in float64: Y = X W^T + bias for the layer's W."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(
            inputs.double(), layer.kernel_size, layer.dilation, layer.padding, layer.stride
        )
        x = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        y = outputs.double().flatten(2).transpose(1, 2).reshape(-1, outputs.shape[1])
    else:
        x, y = inputs.double(), outputs.double()
    return x, y if layer.bias is None else y - layer.bias.detach().double()


@pytest.mark.parametrize("damping", [0.0, 0.01, 0.1, 1.0])
@pytest.mark.parametrize(
    ("arch", "channels", "size"), [("resnet20", 1, 28), ("vgg16_bn_quarter", 3, 32)]
)
def test_obs_is_never_worse_than_masking_and_equals_the_closed_form(arch, channels, size, damping):
    """Per layer, on the inputs the repaired prefix gives it: with X those inputs, y the dense
    layer's outputs and w0 the masked dense weights of a row with kept set S, the refit row is
    (X_S^T X_S + lam I)^-1 (X_S^T y + lam w0_S), lam = damping * mean(diag X^T X), so its
    output error is at most masking's. At ERK 0.98 the stem is pruned too: there the former
    ridge (held to zero) ended 1.002x masking's error at damping 0.01 and 5.9x at 1."""
    torch.manual_seed(0)
    dense = build_model(arch, 10, in_channels=channels, image_size=size).eval()
    update_bn(list(_images(32, channels, size, seed=7).split(16)), dense)
    pruned = copy.deepcopy(dense.eval())
    masks = prune(pruned, "erk", 0.98).masks
    images = _images(48, channels, size, seed=3)
    repaired = repair(
        pruned,
        "obs_reconstruct",
        list(images.split(16)),
        dense=dense,
        masks=masks,
        damping=damping,
        recal_after=False,
    )
    ours, theirs = _layer_io(repaired, images), _layer_io(dense, images)
    for name, mask in masks.items():
        layer = repaired.get_submodule(name)
        x, y = _rows(layer, ours[name][0], theirs[name][1])
        kept_rows = mask.reshape(len(mask), -1)
        start = flat_weight(dense.get_submodule(name)).detach().double() * kept_rows
        got = flat_weight(layer).detach().double()
        masked_error = float((x @ start.T - y).pow(2).sum())
        error = float((x @ got.T - y).pow(2).sum())
        slack = 1e-9 * float(y.pow(2).sum())  # float32 rounding of the layers' outputs
        assert error <= masked_error * (1 + 1e-6) + slack, (name, error / masked_error)

        gram, cross = x.T @ x, x.T @ y
        lam = damping * gram.diagonal().mean()
        for row, kept in enumerate(kept_rows):
            if damping > 0:
                system = gram[kept][:, kept] + lam * torch.eye(int(kept.sum()), dtype=x.dtype)
                want = torch.linalg.solve(system, cross[kept, row] + lam * start[row, kept])
                torch.testing.assert_close(got[row, kept], want, rtol=1e-4, atol=1e-6)
            elif kept.any():  # X_S may be rank-deficient (the classifier's 48 images): the optimum
                system = gram[kept][:, kept]
                best = torch.linalg.lstsq(system, cross[kept, row : row + 1], driver="gelsd")[0]
                optimum, row_error = (
                    float(w @ system @ w - 2 * w @ cross[kept, row] + y[:, row] @ y[:, row])
                    for w in (best[:, 0], got[row, kept])
                )
                assert row_error == pytest.approx(optimum, rel=1e-5, abs=slack), (name, row)
            assert (got[row, ~kept] == 0).all()


def _toy() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(2)
    dense = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 5),
    ).eval()
    update_bn([_images(16, 2, 8, seed=4)], dense)
    pruned = copy.deepcopy(dense.eval())
    prune(pruned, "uniform", 0.7)
    return dense, pruned


def test_adaprune_lowers_the_error_monotonically_and_keeps_zeros():
    dense, pruned = _toy()
    # A shared offset per image correlates the inputs, so the best masked weights lie far from
    # the surviving dense ones: a fit worth 100 steps (the default budget). Adam is not a
    # descent method: at the default rate (chosen on validation for real networks) this toy's
    # error wobbles by ~1e-6 once it has converged, so monotone descent is asserted at a small
    # rate, and the default rate must end at least as low.
    images = _images(32, 2, 8, seed=5) + 2 * _images(32, 1, 1, seed=6)
    batches = list(images.split(8))
    params = AdaPruneParams(recal_after=False, lr=1e-3)
    default_rate = adaprune_layers(
        copy.deepcopy(pruned), batches, dense, AdaPruneParams(recal_after=False)
    )
    model = copy.deepcopy(pruned)
    history = adaprune_layers(model, batches, dense, params)
    assert list(history) == ["0", "3", "7"]  # forward order
    for name, losses in history.items():
        assert len(losses) == params.iterations + 1
        steps = np.diff(losses)
        assert (steps <= 1e-12 * losses[0]).all(), (name, losses)
        assert losses[-1] < 0.5 * losses[0], name
        assert default_rate[name][-1] <= losses[-1] * (1 + 1e-6), name
    for name in history:
        before, after = flat_weight(pruned[int(name)]), flat_weight(model[int(name)])
        assert torch.equal(after == 0, before == 0), name  # zeros stay zero, none added
        assert not torch.equal(after, before)
    again = copy.deepcopy(pruned)
    assert adaprune_layers(again, batches, dense, params) == history  # deterministic
    assert all(
        torch.equal(a, b) for a, b in zip(again.parameters(), model.parameters(), strict=True)
    )

    repaired = repair(pruned, "adaprune", batches, dense=dense, iterations=5)
    assert torch.equal(repaired[0].weight == 0, pruned[0].weight == 0)
    assert not torch.equal(repaired[1].running_var, pruned[1].running_var)  # recalibrated


@pytest.mark.parametrize(
    ("method", "params"), [("obs_reconstruct", {}), ("adaprune", {"iterations": 5})]
)
def test_a_kept_weight_that_is_exactly_zero_stays_free_given_the_masks(method, params):
    dense, _ = _toy()
    dense[3].weight.data[0, 0, 0, 0] = 0.0  # exactly zero, and still kept by the pruning step
    pruned = copy.deepcopy(dense)
    masks = prune(pruned, "uniform", 0.7).masks
    masks["3"][0, 0, 0, 0] = True
    batches = list(_images(16, 2, 8, seed=8).split(8))
    freed = repair(pruned, method, batches, dense=dense, masks=masks, **params)
    assert freed[3].weight[0, 0, 0, 0] != 0
    for name, mask in masks.items():
        assert (freed.get_submodule(name).weight[~mask] == 0).all(), name
    # Without the masks (a direct call) the zero weights are the pruned ones: it stays zero.
    fixed = repair(pruned, method, batches, dense=dense, **params)
    assert fixed[3].weight[0, 0, 0, 0] == 0


def test_masks_that_do_not_fit_are_refused_before_any_work():
    dense, pruned = _toy()
    masks = prune(copy.deepcopy(dense), "uniform", 0.7).masks
    cases = {
        "layer '7' is in one but not the other": {n: m for n, m in masks.items() if n != "7"},
        "mask of layer '0' is torch.float32": {**masks, "0": masks["0"].float()},
    }
    for message, wrong in cases.items():
        with count_calibration_passes() as counter, pytest.raises(UserError, match=message):
            repair(pruned, "obs_reconstruct", _Untouchable(), dense=dense, masks=wrong)
        assert counter.passes == 0


def test_densenet_and_cost():
    torch.manual_seed(1)
    dense = DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2).eval()
    batches = list(_images(16, 3, 16).split(8))
    update_bn(batches, dense)
    pruned = copy.deepcopy(dense.eval())
    masks = prune(pruned, "erk", 0.9).masks
    with count_calibration_passes() as counter:
        repaired = repair(pruned, "obs_reconstruct", batches, dense=dense)
    # One dense pass keeping every layer's output, one pruned-prefix pass per layer, one
    # recalibration.
    assert counter.passes == 1 + len(masks) + 1
    for name, mask in masks.items():
        assert (repaired.get_submodule(name).weight[~mask] == 0).all(), name
    with torch.no_grad():
        assert torch.isfinite(repaired(batches[0])).all()


def test_peak_gram_of_the_large_architectures():
    """The figures quoted in sweep.tasks.reconstruct's docstring."""
    assert peak_gram_floats(build_model("resnet50", 10, 3, 224)) == (512 * 9) ** 2
    assert peak_gram_floats(build_model("densenet121", 10, 3, 224)) == (128 * 9) ** 2


class _Untouchable:
    """A calibration set that fails the test if anything iterates it."""

    def __iter__(self):
        raise AssertionError("repair started work before refusing the input")


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("obs_reconstruct", {"damping": -1}, "obs_reconstruct damping must be finite and >= 0"),
        ("obs_reconstruct", {"damping": float("nan")}, "must be finite and >= 0, got nan"),
        ("obs_reconstruct", {"damping": float("inf")}, "must be finite and >= 0, got inf"),
        ("obs_reconstruct", {"lr": 0.1}, "unknown parameter 'lr' for repair method"),
        ("adaprune", {"iterations": 0}, "adaprune iterations must be > 0, got 0"),
        ("adaprune", {"iterations": 2.5}, "iterations=2.5 must be int, got float"),
        ("adaprune", {"lr": 0}, "adaprune lr must be > 0, got 0.0"),
        ("adaprune", {"damping": 0.1}, "unknown parameter 'damping' for repair method"),
        ("adaprune", {"dense": None}, "'adaprune' fits each layer to the dense model's"),
    ],
)
def test_bad_parameters_are_one_line_errors(method, params, message):
    dense, pruned = _toy()
    kwargs = {"dense": dense, **params}
    with count_calibration_passes() as counter, pytest.raises(UserError) as error:
        repair(pruned, method, _Untouchable(), **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert counter.passes == 0


@pytest.mark.parametrize("method", ["bn_recal", "channel_var", "obs_reconstruct", "adaprune"])
def test_model_without_batchnorm_is_refused_before_any_work(method):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    with pytest.raises(UserError) as error:
        repair(model, method, _Untouchable(), dense=model)
    text = str(error.value)
    assert f"repair method {method!r} recalibrates BatchNorm" in text and "\n" not in text
    assert "Sequential" in text
    repair(model, "none", _Untouchable())  # nothing to recalibrate: accepted


def test_dense_targets_over_the_memory_budget_are_recomputed_per_layer_alike(monkeypatch):
    dense, pruned = _toy()
    batches = list(_images(16, 2, 8, seed=7).split(8))
    kept = copy.deepcopy(pruned)
    with count_calibration_passes() as counter:
        obs_reconstruct(kept, batches, dense, ObsParams(recal_after=False))
    assert counter.passes == 1 + 3  # the dense pass, then one pruned-prefix pass per layer
    monkeypatch.setattr(reconstruct, "DENSE_TARGET_BYTES", 0)
    recomputed = copy.deepcopy(pruned)
    with count_calibration_passes() as counter:
        obs_reconstruct(recomputed, batches, dense, ObsParams(recal_after=False))
    assert counter.passes == 3  # one paired pass per layer
    for a, b in zip(kept.parameters(), recomputed.parameters(), strict=True):
        assert torch.equal(a, b)  # the same dense outputs either way, bit for bit
