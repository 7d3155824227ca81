"""Architectures and checkpoints: real torchvision models, tiny inputs, offline."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock

from sweep.errors import CheckpointError, UnknownNameError
from sweep.tasks.models import (
    ARCHS,
    CheckpointMeta,
    build_model,
    checkpoint_path,
    file_sha256,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
    sidecar_path,
)

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "densenet121")
CIFAR_ARCHS = {"resnet20": 3, "resnet32": 5, "resnet56": 9}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _forward(model: nn.Module, channels: int, size: int, batch: int = 2) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(batch, channels, size, size))


def _stem(model: nn.Module) -> tuple[nn.Conv2d, nn.Module]:
    if isinstance(model, tvm.DenseNet):
        return model.features.conv0, model.features.pool0
    return model.conv1, getattr(model, "maxpool", nn.Identity())


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_runs_on_small_images(arch):
    model = build_model(arch, num_classes=7, in_channels=3, image_size=32)
    assert _forward(model, 3, 32).shape == (2, 7)
    conv, pool = _stem(model)
    assert (conv.kernel_size, conv.stride) == ((3, 3), (1, 1))
    assert isinstance(pool, nn.Identity)


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_torchvision_archs_keep_imagenet_layout_for_large_images(arch):
    model = build_model(arch, num_classes=5, image_size=224)
    reference = getattr(tvm, arch)(weights=None, num_classes=5)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    conv, pool = _stem(model)
    assert (conv.kernel_size, conv.stride) == ((7, 7), (2, 2))
    assert isinstance(pool, nn.MaxPool2d)
    assert _forward(model, 3, 64).shape == (2, 5)


def test_densenet121_at_full_resolution():
    model = build_model("densenet121", num_classes=100, image_size=224)
    assert _forward(model, 3, 224, batch=1).shape == (1, 100)


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_small_stem_and_grayscale_keep_torchvision_keys(arch):
    reference = getattr(tvm, arch)(weights=None, num_classes=10).state_dict()
    model = build_model(arch, num_classes=10, in_channels=1, image_size=28)
    state = model.state_dict()
    assert list(state) == list(reference)
    stem_key = "features.conv0.weight" if arch == "densenet121" else "conv1.weight"
    assert state[stem_key].shape == (64, 1, 3, 3)
    different = [k for k in state if state[k].shape != reference[k].shape]
    assert different == [stem_key]
    assert _forward(model, 1, 28).shape == (2, 10)


@pytest.mark.parametrize(("arch", "blocks"), CIFAR_ARCHS.items())
def test_cifar_resnets_follow_he_et_al(arch, blocks):
    model = build_model(arch, num_classes=10, in_channels=1, image_size=28)
    assert model.conv1.weight.shape == (16, 1, 3, 3)
    stages = [model.layer1, model.layer2, model.layer3]
    assert [len(stage) for stage in stages] == [blocks] * 3
    assert all(isinstance(block, BasicBlock) for stage in stages for block in stage)
    assert [stage[-1].conv2.out_channels for stage in stages] == [16, 32, 64]
    # Option B: 1x1 conv + BN projections exactly where the shape changes.
    projections = [name for name, m in model.named_modules() if name.endswith("downsample")]
    assert projections == ["layer2.0.downsample", "layer3.0.downsample"]
    assert model.layer2[0].downsample[0].kernel_size == (1, 1)
    assert isinstance(model.layer2[0].downsample[1], nn.BatchNorm2d)
    assert model.fc.in_features == 64
    assert _forward(model, 1, 28).shape == (2, 10)
    # 6n+2 weighted layers (+2 projections).
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 6 * blocks + 2 + 2


def test_unknown_arch_names_the_allowed_ones():
    with pytest.raises(UnknownNameError, match=r"unknown arch 'vgg16'; expected one of: resnet20"):
        build_model("vgg16", 10)


# --------------------------------------------------------------------------- checkpoints


def _meta(**changes) -> CheckpointMeta:
    values = dict(
        arch="resnet20",
        dataset="fashion_mnist",
        num_classes=10,
        in_channels=1,
        image_size=28,
        dense_top1=0.9,
        recipe={"epochs": 4, "lr": 0.1},
    )
    values.update(changes)
    return CheckpointMeta(**values)


@pytest.fixture
def saved(tmp_path):
    """A trained-looking resnet20 checkpoint (BN statistics moved away from their init)."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10, in_channels=1, image_size=28)
    with torch.no_grad():
        model.train()(torch.randn(8, 1, 28, 28))
    path = checkpoint_path(tmp_path, "fashion_mnist", "resnet20")
    meta = save_checkpoint(model, path, _meta())
    return model, path, meta


def test_checkpoint_round_trip(saved):
    model, path, meta = saved
    assert path == path.parent.parent / "fashion_mnist" / "resnet20.pt"
    assert meta.sha256 == file_sha256(path) and meta.created_at
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["arch"] == "resnet20" and sidecar["sha256"] == meta.sha256
    assert sidecar["recipe"] == {"epochs": 4, "lr": 0.1}
    loaded, loaded_meta = load_checkpoint(
        path, arch="resnet20", dataset="fashion_mnist", num_classes=10
    )
    assert loaded_meta == meta
    assert not loaded.training
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)
    assert sorted(p.name for p in path.parent.iterdir()) == ["resnet20.json", "resnet20.pt"]
    assert load_state_dict_file(path).keys() == expected.keys()
    umask = os.umask(0)
    os.umask(umask)
    for written in (path, sidecar_path(path)):  # readable like any file, not a temp file's 0600
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask


def _rewrite(path, obj, fix_sha=True):
    """Replace the weights file, optionally making the sidecar vouch for the new bytes."""
    if isinstance(obj, bytes):
        path.write_bytes(obj)
    else:
        torch.save(obj, path)
    if fix_sha:
        sidecar = json.loads(sidecar_path(path).read_text())
        sidecar["sha256"] = file_sha256(path)
        sidecar_path(path).write_text(json.dumps(sidecar))


def _truncated(path):
    _rewrite(path, path.read_bytes()[: path.stat().st_size // 2])


def _sha_mismatch(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    _rewrite(path, bytes(data), fix_sha=False)


def _a_list(path):
    _rewrite(path, [torch.zeros(3)])


def _a_tensor(path):
    _rewrite(path, torch.zeros(3))


def _other_arch_weights(path):
    _rewrite(path, build_model("resnet32", 10, 1, 28).state_dict())


def _sidecar_says_other_classes(path):
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["num_classes"] = 100
    sidecar_path(path).write_text(json.dumps(sidecar))


def _no_sidecar(path):
    sidecar_path(path).unlink()


def _bad_sidecar(path):
    sidecar_path(path).write_text("{not json")


BAD_CHECKPOINTS = {
    "truncated": (_truncated, {}, "unreadable"),
    "sha mismatch": (_sha_mismatch, {}, "sha256"),
    "a list": (_a_list, {}, "holds a list, not a state_dict"),
    "a tensor": (_a_tensor, {}, "holds a Tensor, not a state_dict"),
    "weights of another arch": (_other_arch_weights, {}, "does not fit resnet20"),
    "sidecar of another num_classes": (_sidecar_says_other_classes, {}, "does not fit resnet20"),
    "missing sidecar": (_no_sidecar, {}, "sidecar .* not found"),
    "malformed sidecar": (_bad_sidecar, {}, "sidecar .* is malformed"),
    "asked for another arch": (
        None,
        {"arch": "resnet56"},
        "has arch 'resnet20'; expected 'resnet56'",
    ),
    "asked for another dataset": (None, {"dataset": "cifar10"}, "expected 'cifar10'"),
    "asked for other num_classes": (None, {"num_classes": 100}, "has num_classes 10; expected 100"),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_bad_checkpoints_are_refused_and_left_alone(saved, case):
    _, path, _ = saved
    corrupt, request, message = BAD_CHECKPOINTS[case]
    if corrupt is not None:
        corrupt(path)
    before = {p: p.read_bytes() for p in path.parent.iterdir()}
    with pytest.raises(CheckpointError, match=message) as caught:
        load_checkpoint(path, **request)
    text = str(caught.value)
    assert "\n" not in text and str(path.parent) in text
    assert {p: p.read_bytes() for p in path.parent.iterdir()} == before


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.pt")


@pytest.mark.parametrize(
    ("content", "message"), [([1, 2], "holds a list"), (b"garbage", "unreadable")]
)
def test_load_state_dict_file_refuses_non_state_dicts(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict_file(path)


def test_save_replaces_atomically_and_leaves_no_temporaries(saved):
    model, path, first = saved
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    second = save_checkpoint(model, path, _meta(dense_top1=0.95))
    assert second.sha256 != first.sha256
    assert sorted(p.name for p in path.parent.iterdir()) == ["resnet20.json", "resnet20.pt"]
    loaded, meta = load_checkpoint(path)
    assert meta.dense_top1 == 0.95
    assert torch.equal(loaded.fc.bias, model.fc.bias)
