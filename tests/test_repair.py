"""Label-free repair: BN recalibration, activation-statistic corrections, cost, persistence."""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import torch
from data_files import write_fashion_mnist
from torch import nn
from torch.optim.swa_utils import update_bn
from torchvision.models import DenseNet

from sweep.catalog.repair_parameters import MatchParams, ShrinkParams
from sweep.catalog.repairs import REPAIRS, repair_params
from sweep.core.errors import UnknownNameError, UserError
from sweep.tasks import data
from sweep.tasks import evaluate as evaluate_module
from sweep.tasks.datasets import sources
from sweep.tasks.models import build_model
from sweep.tasks.prune import prune
from sweep.tasks.repair import (
    REPAIR_METHODS,
    ChannelAffine,
    DenseStats,
    Moments,
    attach_repair_points,
    channel_affine,
    count_calibration_passes,
    dense_statistics,
    load_repaired_state,
    repair,
    repair_param_count,
    repair_points,
    shrink_affine,
)
from sweep.tasks.repair_passes import channel_moments, staged_pass
from sweep.tasks.repair_points import stage_plan

torch.set_num_threads(1)  # the CPU is shared: one thread avoids OpenMP spin under load
STAT_METHODS = ("layer_var", "channel_var", "channel_var_shrink")
BUILT_IN_METHODS = tuple(REPAIRS)  # before any test loads a plugin's repairs


def _images(count: int, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _batches(count: int = 32, batch: int = 16, **kwargs) -> list[torch.Tensor]:
    return list(_images(count, **kwargs).split(batch))


def _tiny_densenet() -> nn.Module:
    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2).eval()


def _pruned(dense: nn.Module, sparsity: float = 0.9) -> tuple[nn.Module, dict]:
    pruned = copy.deepcopy(dense)
    return pruned, prune(pruned, "erk", sparsity).masks


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet20", 10, in_channels=1, image_size=28).eval()
    # Non-trivial dense statistics: one recalibration pass on other images.
    update_bn(_batches(seed=7), model)
    return model.eval()


def test_bn_recal_equals_update_bn(resnet20):
    pruned, _ = _pruned(resnet20)
    batches = _batches()
    ours = repair(pruned, "bn_recal", batches)
    reference = copy.deepcopy(pruned)
    update_bn(batches, reference)
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    for key in ref_state:
        torch.testing.assert_close(
            ours_state[key].double(), ref_state[key].double(), atol=1e-6, rtol=0
        )
    norms = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 and not m.training for m in norms)
    assert not ours.training


def _corrected_moments(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, Moments]:
    """Moments after each correction, captured on the model's ordinary forward."""
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = [
        module.register_forward_hook(lambda m, i, o, n=name: outputs.setdefault(n, []).append(o))
        for name, module in model.named_modules()
        if isinstance(module, ChannelAffine)
    ]
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for handle in handles:
        handle.remove()
    return {name: channel_moments(chunks) for name, chunks in outputs.items()}


@pytest.mark.parametrize("arch", ["resnet20", "densenet"])
def test_channel_var_matches_dense_statistics(arch, resnet20):
    if arch == "resnet20":
        dense, batches = resnet20, _batches()
    else:
        torch.manual_seed(1)
        dense, batches = _tiny_densenet(), _batches(channels=3, size=16)
        update_bn(_batches(channels=3, size=16, seed=7), dense)
        dense.eval()
    pruned, _ = _pruned(dense)
    repaired = repair(pruned, "channel_var", batches, dense=dense, recal_after=False)
    target = dense_statistics(dense, batches)
    got = _corrected_moments(repaired, batches)
    assert set(got) == set(target.points) == {p.name for p in repair_points(dense)}
    checked = 0
    for name in target.points:
        want, have = target.moments[name], got[name]
        alive = have.std > 0  # a channel the pruning silenced cannot be given a spread
        scale = np.maximum(want.std, 1e-6)
        np.testing.assert_array_less(np.abs(have.mean - want.mean) / scale, 1e-4)
        np.testing.assert_array_less(np.abs(have.std - want.std)[alive] / scale[alive], 1e-4)
        checked += alive.sum()
    assert checked > 0.9 * sum(len(target.moments[n].mean) for n in target.points)


def test_staged_plan_composes_to_forward(resnet20):
    for model, x in ((resnet20, _images(4)), (_tiny_densenet(), _images(4, 3, 16))):
        with torch.no_grad():
            staged = staged_pass(stage_plan(model), [x], lambda point, chunks: chunks)[0]
            torch.testing.assert_close(staged, model(x), rtol=0, atol=0)


def test_densenet_concatenation_inputs_are_reached_by_batchnorm():
    """Why DenseNet's repair points are not the concatenation inputs: every consumer of a dense
    layer's new features is a BatchNorm, so recalibration undoes any per-channel affine there."""
    torch.manual_seed(0)
    model, batches = _tiny_densenet(), _batches(channels=3, size=16)
    plain = repair(model, "bn_recal", batches)
    scaled = copy.deepcopy(model)
    scale, shift = torch.rand(8) * 3 + 0.2, torch.randn(8)
    scaled.features.denseblock1.denselayer1.register_forward_hook(
        lambda module, inputs, out: out * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    )
    scaled = repair(scaled, "bn_recal", batches)
    x = _images(8, 3, 16, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), plain(x), rtol=0, atol=1e-3)


def test_shrink_keeps_gains_finite_when_a_channel_is_silenced(resnet20):
    dense = Moments(mean=np.array([1.0, 1.0, 1.0, 0.5, 1.0]), var=np.array([1.0, 1, 1, 0, 1]))
    pruned = Moments(
        mean=np.array([0.0, 0.2, 0.3, 0.1, 0.0]), var=np.array([0, 1e-24, 0.25, 0.3, 1])
    )
    params = ShrinkParams(tau=0.25, gain_min=0.0, gain_max=10.0)
    layer_gain = np.sqrt(dense.pooled()[1] / pruned.pooled()[1])
    gain, shift = shrink_affine(pruned, dense, params)
    assert np.isfinite(gain).all() and np.isfinite(shift).all()
    naive = channel_affine(pruned, dense, MatchParams())[0]
    assert naive[1] > 1e11  # the naive gain of a nearly silenced channel explodes ...
    assert gain[0] == pytest.approx(layer_gain) and gain[1] == pytest.approx(layer_gain)  # ... not
    assert layer_gain < gain[2] < naive[2] == 2.0  # a weakened channel: pulled toward the point
    assert gain[3] == 0.0  # dense channel constant: its raw gain
    np.testing.assert_allclose(shift, dense.mean - gain * pruned.mean)  # means still match
    rho = np.linspace(0, 10, 10001)
    zeros = np.zeros_like(rho)
    swept = shrink_affine(Moments(zeros, rho**2), Moments(zeros, np.ones_like(rho)), params)[0]
    assert np.isfinite(swept).all() and params.gain_min <= swept.min() <= swept.max() <= 10.0
    tight = ShrinkParams(gain_max=1.5)
    assert shrink_affine(pruned, dense, tight)[0].max() <= 1.5

    # End to end: a logit silenced completely gets a finite, bounded gain; the model stays finite.
    pruned_model, _ = _pruned(resnet20)
    with torch.no_grad():
        pruned_model.fc.weight[3] = 0
        pruned_model.fc.bias[3] = 0
    repaired = repair(pruned_model, "channel_var_shrink", _batches(), dense=resnet20)
    assert 0 < repaired.fc.repair_out.scale[3].item() <= params.gain_max
    for affine in (m for m in repaired.modules() if isinstance(m, ChannelAffine)):
        assert torch.isfinite(affine.scale).all() and affine.scale.max() <= params.gain_max
    with torch.no_grad():
        assert torch.isfinite(repaired(_images(8))).all()


class _LabelTrap:
    """Stands where a label would be: any use of it raises."""

    def __getattr__(self, name):
        raise AssertionError("repair touched a label")


class _TrappedLabels:
    """Stands in for a split's label array: its length (the split's size) is known, any other
    use raises, so whatever touches a label on its way to the repair code fails the test."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def astype(self, dtype) -> _TrappedLabels:  # the IDX reader converts labels to int64
        return self

    def _touched(self, *args, **kwargs):
        raise AssertionError("the calibration path touched a label")

    __getitem__ = __iter__ = __array__ = __eq__ = __int__ = __index__ = tolist = _touched


class _Images(torch.utils.data.Dataset):
    """Images by index, nothing else."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def test_repair_never_sees_labels(resnet20, tmp_path, monkeypatch):
    """The real path: Fashion-MNIST files -> data.calibration_set -> repair, with every label
    array of the split replaced by a trap."""
    write_fashion_mnist(tmp_path, train=40, test=8)
    read_idx = sources.read_idx

    def trapped(path):
        values = read_idx(path)
        return _TrappedLabels(len(values)) if "labels" in path.name else values

    monkeypatch.setattr(sources, "read_idx", trapped)
    with pytest.raises(AssertionError, match="touched a label"):  # the trap is armed
        data.eval_set("fashion_mnist", tmp_path, tmp_path / "eval-cache")
    calibration = data.calibration_set("fashion_mnist", 32, 0, tmp_path, tmp_path / "cache")
    assert len(calibration) == 32
    pruned, _ = _pruned(resnet20)
    stats = dense_statistics(resnet20, calibration)
    assert stats.calibration_key == calibration.key
    for method in BUILT_IN_METHODS:  # the layer-wise methods included: they need the dense model
        repair(pruned, method, calibration, dense=resnet20)
        if not REPAIR_METHODS[method].needs_dense_model:
            repair(pruned, method, calibration, dense_stats=stats)

    loader = torch.utils.data.DataLoader(_Images(_images(32)), batch_size=16)
    assert repair_param_count(repair(pruned, "channel_var_shrink", loader, dense=resnet20)) > 0
    labelled = [(batch, _LabelTrap()) for batch in _batches()]
    with pytest.raises(UserError, match="without labels; got tuple"):
        repair(pruned, "bn_recal", labelled)


@pytest.mark.parametrize("method", BUILT_IN_METHODS)
def test_pruned_zeros_stay_zero(method, resnet20, monkeypatch):
    """Checked on the model evaluate() runs: the repaired model with BatchNorm folded in."""
    pruned, masks = _pruned(resnet20, sparsity=0.95)
    zeros = sum(int((~mask).sum()) for mask in masks.values())
    assert zeros > 0.9 * sum(mask.numel() for mask in masks.values())
    for name, mask in masks.items():
        assert (pruned.get_submodule(name).weight[~mask] == 0).all(), name
    repaired = repair(pruned, method, _batches(), dense=resnet20)

    evaluated = []
    fold = evaluate_module.fold_batchnorm
    monkeypatch.setattr(
        evaluate_module,
        "fold_batchnorm",
        lambda *args: evaluated.append(fold(*args)) or evaluated[-1],
    )
    labels = torch.zeros(8, dtype=torch.long)
    evaluate_module.evaluate(repaired, evaluate_module.TensorEvalSet(_images(8), labels))
    (model,) = evaluated
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # folded into convs
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert weight.shape == mask.shape and (weight[~mask] == 0).all(), name
    adds_points = (
        REPAIR_METHODS[method].needs_dense and not REPAIR_METHODS[method].needs_dense_model
    )
    expected = 2 * (3 * (16 + 32 + 64) + 10) if adds_points else 0
    assert repair_param_count(repaired) == expected


def test_repaired_model_round_trips_through_state_dict(resnet20):
    pruned, _ = _pruned(resnet20)
    repaired = repair(pruned, "channel_var_shrink", _batches(), dense=resnet20, recal_after=True)
    buffer = io.BytesIO()
    torch.save(repaired.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    loaded = load_repaired_state(build_model("resnet20", 10, 1, 28), state).eval()
    attached = attach_repair_points(build_model("resnet20", 10, 1, 28))
    attached.load_state_dict(state)
    x = _images(8, seed=3)
    with torch.no_grad():
        want = repaired(x)
        torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)
        torch.testing.assert_close(attached.eval()(x), want, rtol=0, atol=0)
    plain = repair(pruned, "bn_recal", _batches())
    load_repaired_state(build_model("resnet20", 10, 1, 28), plain.state_dict())
    logits_only = repair(pruned, "channel_var", _batches(), dense=resnet20, points="logits")
    assert repair_param_count(logits_only) == 2 * 10
    loaded = load_repaired_state(build_model("resnet20", 10, 1, 28), logits_only.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), logits_only(x), rtol=0, atol=0)
    hidden = repair(pruned, "layer_var", _batches(), dense=resnet20, points="hidden")
    assert repair_param_count(hidden) == 2 * 3 * (16 + 32 + 64)
    assert pickle.loads(pickle.dumps(repaired)).fc.repair_out.scale.shape == (10,)


@pytest.mark.parametrize("arch", ["resnet50", "densenet121"])
def test_repair_runs_on_large_architectures(arch):
    torch.manual_seed(0)
    dense = build_model(arch, 10, in_channels=3, image_size=32).eval()
    pruned, masks = _pruned(dense)
    batches = _batches(4, batch=2, channels=3, size=32)
    stats = dense_statistics(dense, batches)
    with count_calibration_passes() as counter:
        repaired = repair(pruned, "channel_var_shrink", batches, dense_stats=stats)
    assert counter.passes == 2
    names = [p.name for p in repair_points(dense)]
    if arch == "densenet121":
        assert names == ["classifier.repair_in", "classifier.repair_out"]
    else:
        assert len(names) == 3 + 4 + 6 + 3 + 1 and names[-1] == "fc.repair_out"
    with torch.no_grad():
        assert torch.isfinite(repaired(batches[0])).all()
    conv = next(n for n in masks if "conv" in n)
    assert (repaired.get_submodule(conv).weight[~masks[conv]] == 0).all()


def test_pass_count_is_constant_in_the_number_of_points(resnet20):
    batches = _batches(32)
    counts = {}
    for arch in ("resnet20", "resnet32"):
        dense = build_model(arch, 10, 1, 28).eval()
        pruned, _ = _pruned(dense)
        stats = dense_statistics(dense, batches)
        for method, params in (
            ("none", {}),
            ("bn_recal", {}),
            ("channel_var", {"recal_after": False}),
            ("channel_var_shrink", {"recal_after": True}),
        ):
            with count_calibration_passes() as counter:
                repair(pruned, method, batches, dense_stats=stats, **params)
            counts[arch, method] = counter.passes
        with count_calibration_passes() as counter:
            repair(pruned, "layer_var", batches, dense=dense, recal_after=False)
        counts[arch, "layer_var with dense"] = counter.passes
    for arch in ("resnet20", "resnet32"):
        assert [counts[arch, m] for m in ("none", "bn_recal", "channel_var")] == [0, 1, 2]
        assert counts[arch, "channel_var_shrink"] == 3
        assert counts[arch, "layer_var with dense"] == 3


def test_dense_statistics_key_and_pickle(resnet20):
    batches = _batches()
    stats = dense_statistics(resnet20, batches)
    again = pickle.loads(pickle.dumps(stats))
    buffer = io.BytesIO()
    torch.save(stats.to_state(), buffer)
    buffer.seek(0)
    restored = DenseStats.from_state(torch.load(buffer, weights_only=True))
    assert restored.key == stats.key and restored.points == stats.points
    np.testing.assert_array_equal(
        restored.moments["layer1.0.repair_out"].mean, stats.moments["layer1.0.repair_out"].mean
    )
    assert again.key == stats.key == dense_statistics(resnet20, iter(batches)).key
    np.testing.assert_array_equal(
        again.moments["fc.repair_out"].var, stats.moments["fc.repair_out"].var
    )
    assert dense_statistics(resnet20, _batches(seed=1)).key != stats.key
    other = copy.deepcopy(resnet20)
    with torch.no_grad():
        other.fc.bias += 1
    assert dense_statistics(other, batches).key != stats.key
    subset = dense_statistics(resnet20, batches, points=["fc.repair_out"])
    assert subset.points == ("fc.repair_out",) and subset.key != stats.key
    with pytest.raises(UserError, match="unknown repair point 'fc'"):
        dense_statistics(resnet20, batches, points=["fc"])
    pruned, _ = _pruned(resnet20)
    with pytest.raises(UserError, match="lack repair point 'layer1.0.repair_out'"):
        repair(pruned, "channel_var", batches, dense_stats=subset)
    with pytest.raises(UserError, match="measured on calibration set"):
        repair(pruned, "channel_var", _batches(seed=1), dense_stats=stats)


def test_params_are_typed_and_documented():
    assert repair_params("channel_var_shrink", tau=1, recal_after=True) == ShrinkParams(
        recal_after=True, tau=1.0
    )
    assert repair_params("none") == repair_params("bn_recal")
    for method in REPAIR_METHODS.values():
        assert len(method.doc) > 40, method.name
    with pytest.raises(UnknownNameError, match=r"unknown repair method 'bn_recall'; expected one"):
        repair_params("bn_recall")
    with pytest.raises(UserError, match=r"unknown parameter 'tau' for repair method 'channel_var'"):
        repair_params("channel_var", tau=0.1)
    with pytest.raises(UserError, match=r"recal_after='yes' must be bool, got str"):
        repair_params("layer_var", recal_after="yes")
    with pytest.raises(UserError, match=r"tau=True must be float"):
        repair_params("channel_var_shrink", tau=True)
    with pytest.raises(UserError, match=r"tau must be > 0, got -1.0"):
        repair_params("channel_var_shrink", tau=-1)
    with pytest.raises(UserError, match=r"gain_min <= 1 <= gain_max"):
        repair_params("channel_var_shrink", gain_max=0.5)
    with pytest.raises(UnknownNameError, match="point set 'blocks'; expected one of: all, hidden"):
        repair_params("channel_var_shrink", points="blocks")
    with pytest.raises(UserError, match="expected: none"):
        repair_params("bn_recal", recal_after=True)


def test_bad_inputs(resnet20):
    pruned, _ = _pruned(resnet20)
    batches = _batches(16)
    with pytest.raises(UnknownNameError, match="'magic'.*none, bn_recal, layer_var"):
        repair(pruned, "magic", batches)
    with pytest.raises(UserError, match="calibration set has no images"):
        repair(pruned, "bn_recal", [])
    with pytest.raises(UserError, match="calibration set has no images"):
        repair(pruned, "bn_recal", [torch.zeros(0, 1, 28, 28)])
    with pytest.raises(UserError, match=r"float image tensors \[N, C, H, W\].*torch.uint8"):
        repair(pruned, "bn_recal", [torch.zeros(2, 1, 28, 28, dtype=torch.uint8)])
    with pytest.raises(UserError, match="'channel_var' matches the dense model.*dense="):
        repair(pruned, "channel_var", batches)
    with pytest.raises(
        UserError, match="does not match the pruned model \\(CifarResNet\\): parameter 'layer1.3"
    ):
        repair(pruned, "channel_var", batches, dense=build_model("resnet32", 10, 1, 28))
    with pytest.raises(UserError, match="no repair points are defined for Sequential"):
        conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        repair(conv, "channel_var", batches, dense=conv)
    with pytest.raises(UserError, match="dense_stats must be a DenseStats"):
        repair(pruned, "layer_var", batches, dense_stats={"fc": 1})
    stats = dense_statistics(resnet20, batches)
    with pytest.raises(UserError, match="'obs_reconstruct' fits each layer.*dense_stats= is not"):
        repair(pruned, "obs_reconstruct", batches, dense_stats=stats)
    with pytest.raises(UserError, match="does not match the pruned model"):
        repair(pruned, "adaprune", batches, dense=build_model("resnet32", 10, 1, 28))
