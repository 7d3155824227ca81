"""Architectures and checkpoints: real torchvision models, tiny inputs, offline."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from sweep.catalog.archs import ARCH_NAMES, ARCHS, SMALL
from sweep.core.errors import CheckpointError, UnknownNameError, UserError
from sweep.tasks.datasets.holdout import holdout
from sweep.tasks.evaluate import fold_batchnorm
from sweep.tasks.models import (
    CheckpointMeta,
    OutdatedCheckpointError,
    StaleCheckpointError,
    arch_digest,
    build_model,
    checkpoint_path,
    file_sha256,
    layout_digest,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
    sidecar_path,
    state_layout,
    verify_checkpoint,
)
from sweep.tasks.repair_points import repair_family, repair_points
from sweep.tasks.train import train_dense

# torchvision networks whose small layout only swaps the stem (VGG's is its own: tests/test_vgg.py)
TORCHVISION_ARCHS = tuple(
    name
    for name, info in ARCHS.items()
    if info.family != "cifar_resnet" and info.small_builder is None
)
CIFAR_ARCHS = {"resnet20": 3, "resnet32": 5, "resnet56": 9}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _forward(model: nn.Module, channels: int, size: int, batch: int = 2) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(batch, channels, size, size))


def _stem(model: nn.Module, arch: str) -> tuple[nn.Conv2d, nn.Module]:
    """The stem conv and pool, addressed by torchvision's names (no pool: an identity)."""
    info = ARCHS[arch]
    pool = model.get_submodule(info.stem_pool) if info.stem_pool else nn.Identity()
    return model.get_submodule(info.stem_conv), pool


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_every_arch_runs_on_small_images(arch):
    model = build_model(arch, num_classes=7, in_channels=3, image_size=32)
    assert _forward(model, 3, 32).shape == (2, 7)
    conv, pool = _stem(model, arch)
    assert (conv.kernel_size, conv.stride) == ((3, 3), (1, 1))
    assert isinstance(pool, nn.Identity)


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_torchvision_archs_keep_imagenet_layout_for_large_images(arch):
    model = build_model(arch, num_classes=5, image_size=224)
    reference = getattr(tvm, arch)(weights=None, num_classes=5)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    conv, pool = _stem(model, arch)
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
    """He et al. (2016), CIFAR-10: ResNet-20/32/56 have 0.27 M / 0.46 M / 0.85 M parameters."""
    model = build_model(arch, num_classes=10, in_channels=3, image_size=32)
    parameters = sum(p.numel() for p in model.parameters())
    assert (
        round(parameters / 1e6, 2) == {"resnet20": 0.27, "resnet32": 0.46, "resnet56": 0.85}[arch]
    )
    if arch == "resnet20":
        assert round(parameters / 1e6, 4) == 0.2697
    stages = [model.layer1, model.layer2, model.layer3]
    assert [len(stage) for stage in stages] == [blocks] * 3
    assert all(isinstance(block, BasicBlock) for stage in stages for block in stage)
    assert [stage[-1].conv2.out_channels for stage in stages] == [16, 32, 64]
    # Option A: parameter-free shortcuts exactly where the shape changes, no 1x1 convs anywhere.
    shortcuts = {name: m for name, m in model.named_modules() if name.endswith("downsample")}
    assert list(shortcuts) == ["layer2.0.downsample", "layer3.0.downsample"]
    assert all(not list(m.parameters()) and not list(m.buffers()) for m in shortcuts.values())
    assert not any("downsample" in key for key in model.state_dict())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.kernel_size == (3, 3) for conv in convs)
    assert len(convs) + 1 == 6 * blocks + 2  # 6n+2 weighted layers, the fc included
    assert model.fc.in_features == 64
    for size in (28, 15):  # odd sides too: the shortcut subsamples like the strided conv
        assert _forward(build_model(arch, 10, 1, size), 1, size).shape == (2, 10)


def test_option_a_shortcut_subsamples_and_zero_pads():
    """With its residual branch silenced, a downsampling block outputs relu(shortcut(x)):
    x at every other pixel in the first 16 channels, zeros in the 16 new ones."""
    block = build_model("resnet20", 10).layer2[0].eval()
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
        x = torch.randn(2, 16, 8, 8)
        out = block(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], F.relu(x[:, :, ::2, ::2]))
    assert torch.equal(out[:, 16:], torch.zeros(2, 16, 4, 4))


def test_option_a_resnet_repair_points_and_batchnorm_folding():
    """Repair points are the block outputs after the add (16/32/64 channels) and the logits;
    folding every conv -> BN pair keeps the eval-mode function (no BN on the shortcuts)."""
    torch.manual_seed(0)
    model = build_model("resnet20", 10, in_channels=1, image_size=28)
    with torch.no_grad():
        model.train()(torch.randn(16, 1, 28, 28))  # BN statistics away from their init
    points = [(p.name, p.channels) for p in repair_points(model)]
    blocks = [f"layer{stage}.{index}.repair_out" for stage in (1, 2, 3) for index in range(3)]
    assert [name for name, _ in points] == [*blocks, "fc.repair_out"]
    assert [channels for _, channels in points] == [16] * 3 + [32] * 3 + [64] * 3 + [10]
    x = torch.randn(4, 1, 28, 28)
    folded = fold_batchnorm(model, x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-4, atol=1e-4)


def test_cifar_resnets_refuse_imagenet_inputs():
    with pytest.raises(UserError, match=r"arch 'resnet20' has no layout for 224 px inputs"):
        build_model("resnet20", 10, image_size=224)


# --------------------------------------------------------------------------- the catalog


def test_catalog_imports_without_torch():
    code = "import sys, sweep.catalog.archs; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_catalog_entry_describes_the_built_model(arch):
    info = ARCHS[arch]
    assert info.name == arch
    for layout, size in ((SMALL, 32), ("imagenet", 224)):
        if layout not in info.layouts:
            continue
        with torch.device("meta"):  # structure only: no weights to initialise
            model = build_model(arch, num_classes=7, image_size=size)
        classifier = model.get_submodule(info.classifier_for(size))
        assert isinstance(classifier, nn.Linear) and classifier.out_features == 7
        assert isinstance(model.get_submodule(info.stem_conv), nn.Conv2d)
        assert repair_family(model) == info.repair_family
        residual = any(isinstance(m, BasicBlock | Bottleneck) for m in model.modules())
        assert residual == info.residual
        assert info.imagenet_weights == hasattr(tvm, info.builder)


def test_unknown_arch_in_the_catalog():
    with pytest.raises(UnknownNameError, match=r"unknown arch 'vgg16'; expected one of: resnet20"):
        ARCHS["vgg16"]


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
        seed=0,
        held_out=holdout("fashion_mnist", 60000).record(),
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
    path = checkpoint_path(tmp_path, "fashion_mnist", "resnet20", 0)
    meta = save_checkpoint(model, path, _meta())
    return model, path, meta


def test_checkpoint_round_trip(saved):
    model, path, meta = saved
    assert path == path.parent.parent / "fashion_mnist" / "resnet20-seed0.pt"
    assert meta.sha256 == file_sha256(path) and meta.created_at
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["arch"] == "resnet20" and sidecar["sha256"] == meta.sha256
    assert sidecar["recipe"] == {"epochs": 4, "lr": 0.1} and sidecar["seed"] == 0
    assert sidecar["held_out"] == {
        "images": 5000,
        "train_images": 55000,
        "sha256": holdout("fashion_mnist", 60000).digest,
    }
    loaded, loaded_meta = load_checkpoint(
        path, arch="resnet20", dataset="fashion_mnist", num_classes=10
    )
    assert loaded_meta == meta
    assert not loaded.training
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "resnet20-seed0.json",
        "resnet20-seed0.pt",
    ]
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
    # The sidecar's recorded layout is not the one its (edited) settings build now.
    "sidecar of another num_classes": (
        _sidecar_says_other_classes,
        {},
        "older layout of resnet20 .* for 100 classes",
    ),
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
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "resnet20-seed0.json",
        "resnet20-seed0.pt",
    ]
    loaded, meta = load_checkpoint(path)
    assert meta.dense_top1 == 0.95
    assert torch.equal(loaded.fc.bias, model.fc.bias)


def test_failed_save_leaves_the_old_checkpoint(saved):
    model, path, first = saved
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_checkpoint(model, path, _meta(recipe={"bad": object()}))
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
    assert load_checkpoint(path)[1] == first


def test_save_refuses_a_model_that_is_not_the_meta_arch(tmp_path):
    path = checkpoint_path(tmp_path, "fashion_mnist", "resnet20", 0)
    with pytest.raises(UserError, match="is not resnet20 with 10 classes.*unexpected keys"):
        save_checkpoint(build_model("resnet32", 10, 1, 28), path, _meta())
    assert not tmp_path.joinpath("fashion_mnist").exists()


# --------------------------------------------------------------------------- layouts


def test_arch_digest_is_the_digest_of_the_built_layout(saved):
    _, path, meta = saved
    built = build_model("resnet20", 10, in_channels=1, image_size=28).state_dict()
    assert meta.arch_digest == arch_digest("resnet20", 10, 1, 28)
    assert meta.arch_digest == layout_digest(state_layout(built))
    assert json.loads(sidecar_path(path).read_text())["arch_digest"] == meta.arch_digest
    others = {
        arch_digest(*settings)
        for settings in (
            ("resnet20", 10, 1, 28),
            ("resnet20", 100, 1, 28),
            ("resnet20", 10, 3, 28),
            ("resnet32", 10, 1, 28),
            ("resnet18", 10, 3, 32),
            ("resnet18", 10, 3, 224),  # the ImageNet stem has other conv1 shapes
        )
    }
    assert len(others) == 6 and all(len(d) == 16 for d in others)


def _option_b_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict of the option-B ResNet-20 this project built before: the same network
    plus a 1x1 conv + BN projection where the shape changes."""
    state = dict(model.state_dict())
    for stage, (cin, cout) in (("layer2", (16, 32)), ("layer3", (32, 64))):
        bn = nn.BatchNorm2d(cout)
        state[f"{stage}.0.downsample.0.weight"] = torch.randn(cout, cin, 1, 1)
        state |= {f"{stage}.0.downsample.1.{k}": v for k, v in bn.state_dict().items()}
    return state


def _write_old_layout(path, with_digest: bool) -> None:
    """Overwrite the saved checkpoint with option-B weights and a sidecar that vouches for
    them, as `python -m sweep.pretrain` wrote it then (without arch_digest, or with the old one)."""
    state = _option_b_state(build_model("resnet20", 10, 1, 28))
    torch.save(state, path)
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["sha256"] = file_sha256(path)
    if with_digest:
        sidecar["arch_digest"] = layout_digest(state_layout(state))
    else:
        del sidecar["arch_digest"]
    sidecar_path(path).write_text(json.dumps(sidecar))


@pytest.mark.parametrize("with_digest", [True, False], ids=["recorded digest", "old sidecar"])
def test_old_layout_checkpoints_say_how_to_retrain(saved, with_digest):
    _, path, _ = saved
    _write_old_layout(path, with_digest)
    retrain = (
        "retrain it with python -m sweep.pretrain --dataset fashion_mnist --arch resnet20 "
        f"--seed 0 --checkpoints {path.parent.parent} --force"
    )
    for load in (load_checkpoint, lambda p: verify_checkpoint(p, "fashion_mnist", "resnet20", 0)):
        with pytest.raises(OutdatedCheckpointError) as caught:
            load(path)
        text = str(caught.value)
        assert text.startswith(f"checkpoint {path} was trained for an older layout of resnet20")
        assert text.endswith(retrain) and "\n" not in text
    with pytest.raises(CheckpointError) as caught:  # pretrain refuses it without --force
        train_dense("fashion_mnist", "resnet20", 1, path.parent.parent)
    assert str(caught.value).count("--force") == 1


# --------------------------------------------------------------------------- verify_checkpoint


def _text_file_with_matching_sha(path):
    _rewrite(path, b"weights: see the attached spreadsheet\n")


def _sidecar_for_another_arch(path):
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["arch"] = "resnet32"
    sidecar_path(path).write_text(json.dumps(sidecar))


def _sidecar_without_sha(path):
    sidecar = json.loads(sidecar_path(path).read_text())
    del sidecar["sha256"]
    sidecar_path(path).write_text(json.dumps(sidecar))


def _truncated_only(path):  # the sidecar still holds the complete file's sha256
    path.write_bytes(path.read_bytes()[:1000])


VERIFY_FAILURES = {
    "truncated": (_truncated_only, "has sha256 .* expected .* from its sidecar"),
    "text file with a matching sha": (_text_file_with_matching_sha, "is unreadable"),
    "sidecar for another arch": (_sidecar_for_another_arch, "has arch 'resnet32'; expected"),
    "old layout": (lambda p: _write_old_layout(p, False), "older layout of resnet20"),
    "no sidecar": (_no_sidecar, "sidecar .* not found"),
    "sidecar not JSON": (_bad_sidecar, "sidecar .* is malformed"),
    "sidecar without sha256": (_sidecar_without_sha, "sidecar .* is malformed .*sha256"),
    "not a state_dict": (_a_list, "holds a list, not a state_dict"),
    "dataset's classes": (_sidecar_says_other_classes, "has num_classes 100; expected 10"),
    "another seed": (lambda p: _edit_sidecar(p, seed=1), "has seed 1; expected 0"),
    "seed not an integer": (lambda p: _edit_sidecar(p, seed="0"), "malformed .*seed '0'"),
    "negative seed": (lambda p: _edit_sidecar(p, seed=-1), "malformed .*seed -1"),
    "held-out record without a digest": (
        lambda p: _edit_sidecar(p, held_out={"images": 5000}),
        "malformed .*held_out.sha256",
    ),
    "no held-out record": (
        lambda p: _edit_sidecar(p, held_out=None),
        "trained before the validation split existed",
    ),
}


def _edit_sidecar(path, **fields):
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar.update(fields)
    sidecar_path(path).write_text(json.dumps(sidecar))


@pytest.mark.parametrize("case", VERIFY_FAILURES)
def test_verify_checkpoint_names_the_file_and_the_problem(saved, case):
    _, path, _ = saved
    corrupt, message = VERIFY_FAILURES[case]
    corrupt(path)
    with pytest.raises(CheckpointError, match=message) as caught:
        verify_checkpoint(path, "fashion_mnist", "resnet20", 0)
    text = str(caught.value)
    assert "\n" not in text and (str(path) in text or str(sidecar_path(path)) in text)


def test_verify_checkpoint_accepts_a_good_one_and_checks_what_was_asked(saved):
    _, path, meta = saved
    assert verify_checkpoint(path, "fashion_mnist", "resnet20", 0) == meta
    with pytest.raises(CheckpointError, match="has dataset 'fashion_mnist'; expected 'cifar10'"):
        verify_checkpoint(path, "cifar10", "resnet20", 0)
    with pytest.raises(UnknownNameError, match="unknown dataset 'mnist'"):
        verify_checkpoint(path, "mnist", "resnet20", 0)
    with pytest.raises(CheckpointError, match="has seed 0; expected 2"):
        verify_checkpoint(path, "fashion_mnist", "resnet20", 2)
    missing = checkpoint_path(path.parent.parent, "fashion_mnist", "resnet32", 4)
    with pytest.raises(
        CheckpointError, match="not found; train it with .* --arch resnet32 --seed 4"
    ):
        verify_checkpoint(missing, "fashion_mnist", "resnet32", 4)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True, 2**32])
def test_a_replicate_is_an_integer_from_0(tmp_path, seed):
    with pytest.raises(
        UserError, match=f"seed {seed!r} is not allowed; expected an integer from 0"
    ):
        checkpoint_path(tmp_path, "fashion_mnist", "resnet20", seed)
    with pytest.raises(UserError, match="is not allowed"):
        verify_checkpoint(tmp_path / "x.pt", "fashion_mnist", "resnet20", seed)


def test_a_checkpoint_trained_before_the_validation_split_is_stale(saved):
    """A sidecar as written before replicates and the validation split: no seed, no held_out."""
    _, path, _ = saved
    sidecar = json.loads(sidecar_path(path).read_text())
    del sidecar["seed"], sidecar["held_out"]
    sidecar_path(path).write_text(json.dumps(sidecar))
    with pytest.raises(StaleCheckpointError) as caught:
        verify_checkpoint(path, "fashion_mnist", "resnet20", 0)
    text = str(caught.value)
    assert isinstance(caught.value, OutdatedCheckpointError) and "\n" not in text
    assert text.startswith(f"checkpoint {path} was trained before the validation split existed")
    assert text.endswith(
        "retrain it with python -m sweep.pretrain --dataset fashion_mnist --arch resnet20 "
        f"--seed 0 --checkpoints {path.parent.parent} --force"
    )
