"""VGG with BatchNorm: the CIFAR form (built, pruned, repaired, saved) and the 224 px form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn

from sweep.catalog.allocations import ALLOCATIONS
from sweep.catalog.archs import ARCHS, CONV_BLOCK_OUTPUTS
from sweep.core.errors import UserError
from sweep.tasks import train
from sweep.tasks.datasets.holdout import holdout
from sweep.tasks.evaluate import fold_batchnorm
from sweep.tasks.models import (
    CheckpointMeta,
    build_model,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from sweep.tasks.prune import prunable_layers, prune
from sweep.tasks.repair import (
    ChannelAffine,
    count_calibration_passes,
    dense_statistics,
    load_repaired_state,
    repair,
    repair_points,
)
from sweep.tasks.repair_passes import channel_moments, staged_pass
from sweep.tasks.repair_points import repair_family, stage_plan

VGG_ARCHS = ("vgg11_bn", "vgg16_bn")
# The ReLU that ends each block (right before its max-pool) in torchvision's `features` indexing.
BLOCK_ENDS = {"vgg11_bn": (2, 6, 13, 20, 27), "vgg16_bn": (5, 12, 22, 32, 42)}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _images(n: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def dense() -> nn.Module:
    """A CIFAR VGG-16-BN whose BatchNorm statistics have moved away from their init."""
    torch.manual_seed(0)
    model = build_model("vgg16_bn", 10, in_channels=3, image_size=32)
    with torch.no_grad():
        model.train()(_images(32, seed=1))
    return model.eval()


# --------------------------------------------------------------------------- the CIFAR form


@pytest.mark.parametrize("arch", VGG_ARCHS)
def test_cifar_form_is_torchvisions_features_and_one_linear(arch):
    model = build_model(arch, 10, in_channels=3, image_size=32)
    reference = getattr(tvm, arch)(weights=None, num_classes=10)

    def features(module: nn.Module) -> list[tuple[str, torch.Size]]:
        return [(k, v.shape) for k, v in module.state_dict().items() if k.startswith("features.")]

    assert features(model) == features(reference)
    assert [key for key in model.state_dict() if not key.startswith("features.")] == [
        "classifier.weight",
        "classifier.bias",
    ]
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 512
    body = sum(p.numel() for p in reference.features.parameters())
    assert sum(p.numel() for p in model.parameters()) == body + 512 * 10 + 10
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == {"vgg11_bn": 8, "vgg16_bn": 13}[arch]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(pool.ceil_mode for pool in pools)
    for channels, size in ((3, 32), (1, 28)):  # CIFAR and Fashion-MNIST both end at 1x1
        model = build_model(arch, 7, in_channels=channels, image_size=size).eval()
        with torch.no_grad():
            assert model.features(_images(2, channels, size)).shape == (2, 512, 1, 1)
            assert model(_images(2, channels, size)).shape == (2, 7)


def test_cifar_form_parameter_count():
    """The common CIFAR VGG-16-BN: 14.7 M parameters (13 convs with BN, a 512 -> 10 Linear)."""
    model = build_model("vgg16_bn", 10, image_size=32)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 14.7


def test_quarter_width_vgg16_is_vgg16_with_a_quarter_of_the_channels():
    """The `baselines` grid's VGG: VGG-16-BN's layout (13 convs, the same block ends and repair
    points) with every width divided by 4, small inputs only, no ImageNet weights to load."""
    info = ARCHS["vgg16_bn_quarter"]
    assert info.layouts == ("small",) and not info.imagenet_weights and not info.residual
    full = build_model("vgg16_bn", 10, in_channels=1, image_size=28)
    quarter = build_model("vgg16_bn_quarter", 10, in_channels=1, image_size=28).eval()
    full_shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    for key, value in quarter.state_dict().items():
        want = full_shapes[key]
        if value.dim() == 4:  # conv: both channel counts a quarter, the stem's input kept
            assert tuple(value.shape) == (want[0] // 4, max(want[1] // 4, 1), *want[2:]), key
        elif value.dim() == 2:  # the classifier: 128 -> 10
            assert tuple(value.shape) == (want[0], want[1] // 4), key
    assert quarter.state_dict().keys() == full.state_dict().keys()
    assert sum(p.numel() for p in quarter.parameters()) == 923_898
    assert [n for n, m in quarter.named_modules() if isinstance(m, nn.Conv2d)] == [
        n for n, m in full.named_modules() if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        assert quarter.features(_images(2, 1, 28)).shape == (2, 128, 1, 1)
    with pytest.raises(UserError, match="no layout for 224 px"):
        build_model("vgg16_bn_quarter", 10, image_size=224)


def test_cifar_form_folds_batchnorm_for_evaluation(dense):
    x = _images(4, seed=2)
    folded = fold_batchnorm(dense, x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), dense(x), rtol=1e-4, atol=1e-4)


def test_cifar_form_trains_one_step():
    torch.manual_seed(0)
    model = build_model("vgg11_bn", 2, in_channels=1, image_size=28)
    before = model.features[0].weight.detach().clone()
    images, labels = _images(8, 1, 28), torch.arange(8) % 2
    recipe = train.Recipe(epochs=1, batch_size=8, lr=0.01, seed=0)
    dataset = torch.utils.data.TensorDataset(images, labels)
    history = train.fit(model, dataset, recipe, progress=False, log=lambda _: None)
    assert len(history) == 1 and np.isfinite(history[0].train_loss)
    assert not torch.equal(model.features[0].weight.detach(), before)


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("allocation", ALLOCATIONS)
def test_cifar_form_prunes_under_every_allocation(dense, allocation):
    model = build_model("vgg16_bn", 10, image_size=32)
    model.load_state_dict(dense.state_dict())
    report = prune(model, allocation, 0.95)
    layers = prunable_layers(model)
    numel = sum(m.weight.numel() for _, m in layers)
    kept = round(0.05 * numel)
    assert sum(layer.kept for layer in report.layers) == kept
    assert sum(int((m.weight != 0).sum()) for _, m in layers) == kept  # randn: no zeros before
    assert [name for name, _ in layers][0] == "features.0"
    assert [name for name, _ in layers][-1] == ARCHS["vgg16_bn"].classifier_for(32)
    if allocation == "uniform_plus":
        assert report.layers[0].density == 1.0 and report.layers[-1].density >= 0.2


# --------------------------------------------------------------------------- repair


def test_repair_points_are_block_outputs_and_logits():
    for arch, ends in BLOCK_ENDS.items():
        model = build_model(arch, 10, image_size=32)
        assert repair_family(model) == ARCHS[arch].repair_family == CONV_BLOCK_OUTPUTS
        points = repair_points(model)
        assert [p.name for p in points] == [
            *(f"features.{end}.repair_out" for end in ends),
            "classifier.repair_out",
        ]
        assert [p.channels for p in points] == [64, 128, 256, 512, 512, 10]
        assert all(isinstance(model.features[end + 1], nn.MaxPool2d) for end in ends)
        assert all(isinstance(model.features[end], nn.ReLU) for end in ends)


def test_staged_plan_composes_to_forward(dense):
    x = _images(3, seed=3)
    with torch.no_grad():
        staged = staged_pass(stage_plan(dense), [x], lambda point, chunks: chunks)[0]
        torch.testing.assert_close(staged, dense(x), rtol=0, atol=0)


def _pruned(dense: nn.Module) -> nn.Module:
    model = build_model("vgg16_bn", 10, image_size=32)
    model.load_state_dict(dense.state_dict())
    prune(model, "erk", 0.9)
    return model.eval()


def _point_means(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-channel means at every repair point (after its correction, if any) on the batches."""
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = []
    for point in repair_points(model):
        host = model.get_submodule(point.host)

        def record(module, inputs, output, name=point.name):
            outputs.setdefault(name, []).append(output.detach())

        handles.append(host.register_forward_hook(record))
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for handle in handles:
        handle.remove()
    return {name: channel_moments(chunks).mean for name, chunks in outputs.items()}


def test_bn_recal_and_channel_var_shrink_repair_the_cifar_form(dense):
    pruned = _pruned(dense)
    batches = [_images(16, seed=4), _images(16, seed=5)]
    with count_calibration_passes() as counter:
        recalibrated = repair(pruned, "bn_recal", batches)
    assert counter.passes == 1
    assert not torch.equal(recalibrated.features[1].running_mean, pruned.features[1].running_mean)
    stats = dense_statistics(dense, batches)
    with count_calibration_passes() as counter:
        repaired = repair(pruned, "channel_var_shrink", batches, dense_stats=stats)
    assert counter.passes == 2
    affines = {n for n, m in repaired.named_modules() if isinstance(m, ChannelAffine)}
    assert affines == {p.name for p in repair_points(dense)}
    # The shrinkage rule moves every point's means to the dense model's.
    target, got = _point_means(dense, batches), _point_means(repaired, batches)
    for name, want in target.items():
        scale = np.maximum(np.sqrt(stats.moments[name].var), 1e-3)
        np.testing.assert_array_less(np.abs(got[name] - want) / scale, 1e-3)
    assert not np.allclose(
        _point_means(recalibrated, batches)["classifier.repair_out"],
        target["classifier.repair_out"],
    )
    fresh = load_repaired_state(build_model("vgg16_bn", 10, image_size=32), repaired.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(batches[0]), repaired(batches[0]), rtol=0, atol=0)


# --------------------------------------------------------------------------- checkpoints


def test_cifar_form_round_trips_through_a_checkpoint(tmp_path, dense):
    path = checkpoint_path(tmp_path, "cifar10", "vgg16_bn", 0)
    meta = CheckpointMeta(
        arch="vgg16_bn",
        dataset="cifar10",
        num_classes=10,
        in_channels=3,
        image_size=32,
        seed=0,
        held_out=holdout("cifar10", 50000).record(),
    )
    save_checkpoint(dense, path, meta)
    loaded, loaded_meta = load_checkpoint(path, arch="vgg16_bn", dataset="cifar10", replicate=0)
    assert loaded_meta.arch == "vgg16_bn" and not loaded.training
    state = dense.state_dict()
    assert loaded.state_dict().keys() == state.keys()
    assert all(torch.equal(loaded.state_dict()[key], state[key]) for key in state)
    x = _images(4, seed=6)
    with torch.no_grad():
        assert torch.equal(loaded(x), dense(x))


# --------------------------------------------------------------------------- the 224 px form


def test_imagenet_form_is_torchvisions_vgg16_bn():
    torch.manual_seed(0)
    model = build_model("vgg16_bn", 100, image_size=224).eval()
    with torch.device("meta"):
        reference = tvm.vgg16_bn(weights=None, num_classes=100)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    assert model.get_submodule(ARCHS["vgg16_bn"].classifier_for(224)).out_features == 100
    with torch.no_grad():
        assert model(_images(1, size=224)).shape == (1, 100)
    assert [p.name for p in repair_points(model)][-1] == "classifier.6.repair_out"


def test_imagenet_form_with_grayscale_keeps_the_stem_geometry():
    with torch.device("meta"):
        model = build_model("vgg16_bn", 10, in_channels=1, image_size=224)
        reference = tvm.vgg16_bn(weights=None, num_classes=10)
    stem, original = model.features[0], reference.features[0]
    assert (stem.in_channels, stem.kernel_size, stem.stride, stem.padding) == (
        1,
        original.kernel_size,
        original.stride,
        original.padding,
    )
    assert stem.bias is not None
    state, expected = model.state_dict(), reference.state_dict()
    assert list(state) == list(expected)
    assert [k for k in state if state[k].shape != expected[k].shape] == ["features.0.weight"]


def test_imagenet_init_replaces_only_the_last_classifier_layer(monkeypatch):
    """pretrain fine-tunes 224 px VGG from torchvision's ImageNet weights: everything but the
    1000-class Linear (the catalog's classifier name) must load."""
    with torch.device("meta"):
        model = build_model("vgg16_bn", 10, image_size=224)
        imagenet = tvm.vgg16_bn(weights=None).state_dict()
    monkeypatch.setattr(train, "_imagenet_state_dict", lambda arch, allow: (imagenet, "weights"))
    assert train.init_from_imagenet(model, "vgg16_bn", False, log=lambda _: None) == "weights"
