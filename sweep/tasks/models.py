"""Architectures and dense checkpoints.

Every model keeps torchvision's module names (``conv1``/``bn1``/``layer1``…/``fc`` for ResNets,
``features.*``/``classifier`` for DenseNet) so that pruning and repair code can walk all of them
alike, and so that a checkpoint's state_dict keys are the ones torchvision users expect.

A checkpoint is a plain state_dict file ``<dir>/<dataset>/<arch>.pt`` (loaded with
``weights_only=True``, so opening one never runs code) plus a JSON sidecar ``<arch>.json`` that
says what the weights are and carries their sha256, so a truncated, replaced or mismatched file is
refused with a one-line :class:`CheckpointError` instead of silently pruning the wrong network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock

from sweep.errors import CheckpointError, UnknownNameError

ARCHS: tuple[str, ...] = (
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
)

# Inputs at most this large get the small-image stem (3x3 stride-1 conv, no max-pool).
SMALL_IMAGE_MAX = 64

_CIFAR_BLOCKS_PER_STAGE = {"resnet20": 3, "resnet32": 5, "resnet56": 9}
_TORCHVISION: dict[str, Callable[..., nn.Module]] = {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "densenet121": tvm.densenet121,
}


class CifarResNet(nn.Module):
    """ResNet-6n+2 of He et al. (2016) for 32 px inputs: stages of 16/32/64 channels.

    Shortcuts that change shape are 1x1 conv + BN projections (option B), so every block is
    torchvision's :class:`BasicBlock` with a plain residual add, and the model's attribute names
    match torchvision's ResNet (``layer4`` is simply absent).
    """

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = 16
        self.layer1 = self._make_stage(16, blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(32, blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(64, blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for index in range(blocks):
            block_stride = stride if index == 0 else 1
            downsample = None
            if block_stride != 1 or self.inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes, 1, stride=block_stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            layers.append(BasicBlock(self.inplanes, planes, block_stride, downsample))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _stem_conv(in_channels: int, out_channels: int, small: bool) -> nn.Conv2d:
    """The replacement stem conv: 3x3 stride 1 for small images, else ImageNet's 7x7 stride 2."""
    conv = (
        nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
        if small
        else nn.Conv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False)
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def _adapt_stem(model: nn.Module, in_channels: int, small: bool) -> None:
    """Swap stem modules in place; the replaced names keep the state_dict keys torchvision's."""
    if isinstance(model, tvm.DenseNet):
        owner, conv_name, pool_name = model.features, "conv0", "pool0"
    else:
        owner, conv_name, pool_name = model, "conv1", "maxpool"
    if small or in_channels != 3:
        old: nn.Conv2d = getattr(owner, conv_name)
        setattr(owner, conv_name, _stem_conv(in_channels, old.out_channels, small))
    if small:
        setattr(owner, pool_name, nn.Identity())


def build_model(
    arch: str, num_classes: int, in_channels: int = 3, image_size: int = 32
) -> nn.Module:
    """A freshly initialised model; ``image_size <= 64`` selects the small-image stem."""
    if arch in _CIFAR_BLOCKS_PER_STAGE:
        return CifarResNet(_CIFAR_BLOCKS_PER_STAGE[arch], num_classes, in_channels)
    if arch not in _TORCHVISION:
        raise UnknownNameError("arch", arch, ARCHS)
    model = _TORCHVISION[arch](weights=None, num_classes=num_classes)
    _adapt_stem(model, in_channels, small=image_size <= SMALL_IMAGE_MAX)
    return model


# --------------------------------------------------------------------------- checkpoints


@dataclass
class CheckpointMeta:
    """What a checkpoint's weights are; stored as the JSON sidecar next to the .pt file."""

    arch: str
    dataset: str
    num_classes: int
    in_channels: int
    image_size: int
    dense_top1: float | None = None
    recipe: dict = field(default_factory=dict)
    sha256: str = ""
    created_at: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> CheckpointMeta:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def checkpoint_path(checkpoint_dir: Path | str, dataset: str, arch: str) -> Path:
    return Path(checkpoint_dir) / dataset / f"{arch}.pt"


def sidecar_path(path: Path | str) -> Path:
    return Path(path).with_suffix(".json")


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_path(target: Path) -> Path:
    """A unique temporary name next to the target, so os.replace is an atomic rename.

    Not created here (unlike mkstemp, whose 0600 mode would stick to the final file).
    """
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def atomic_torch_save(obj: object, path: Path) -> None:
    """torch.save that never leaves a half-written file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(model: nn.Module, path: Path | str, meta: CheckpointMeta) -> CheckpointMeta:
    """Write state_dict + sidecar atomically; returns ``meta`` with sha256 and created_at filled."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # contiguous(): channels_last training must not change the stored layout.
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    weights_tmp, sidecar_tmp = _temp_path(path), _temp_path(sidecar_path(path))
    try:
        torch.save(state, weights_tmp)
        meta = dataclasses.replace(
            meta,
            sha256=file_sha256(weights_tmp),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        sidecar_tmp.write_text(json.dumps(dataclasses.asdict(meta), indent=2) + "\n")
        # Weights first: a crash between the two renames leaves a sha mismatch, which loading
        # detects, never a sidecar that vouches for weights it does not describe.
        os.replace(weights_tmp, path)
        os.replace(sidecar_tmp, sidecar_path(path))
    finally:
        weights_tmp.unlink(missing_ok=True)
        sidecar_tmp.unlink(missing_ok=True)
    return meta


def _one_line(error: BaseException, limit: int = 160) -> str:
    """An exception's message squeezed onto one line, so CLI errors stay one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_state_dict_file(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a plain state_dict file (no sidecar needed) without running any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; expected a state_dict .pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({_one_line(error)}); "
            "expected a complete state_dict file written by torch.save"
        ) from error
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a state_dict; "
            "expected a dict of parameter name -> tensor"
        )
    return state


def read_meta(path: Path | str) -> CheckpointMeta:
    """The sidecar of checkpoint ``path``; CheckpointError if it is missing or malformed."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise CheckpointError(
            f"checkpoint sidecar {sidecar} not found; expected the JSON file written next to "
            f"{Path(path).name} by python -m sweep.pretrain"
        )
    try:
        return CheckpointMeta.from_dict(json.loads(sidecar.read_text()))
    except (ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"checkpoint sidecar {sidecar} is malformed ({_one_line(error)}); "
            "expected a JSON object with arch, dataset, num_classes, in_channels, image_size, "
            "sha256"
        ) from error


def load_checkpoint(
    path: Path | str,
    arch: str | None = None,
    dataset: str | None = None,
    num_classes: int | None = None,
) -> tuple[nn.Module, CheckpointMeta]:
    """The model of a checkpoint in eval mode, after checking it is the one that was asked for."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found; train it with python -m sweep.pretrain"
        )
    meta = read_meta(path)
    for name, wanted in (("arch", arch), ("dataset", dataset), ("num_classes", num_classes)):
        found = getattr(meta, name)
        if wanted is not None and found != wanted:
            raise CheckpointError(f"checkpoint {path} has {name} {found!r}; expected {wanted!r}")
    sha = file_sha256(path)
    if sha != meta.sha256:
        raise CheckpointError(
            f"checkpoint {path} has sha256 {sha[:16]}…; expected {meta.sha256[:16]}… from its "
            "sidecar (file truncated or replaced)"
        )
    state = load_state_dict_file(path)
    if meta.arch not in ARCHS:
        raise CheckpointError(f"checkpoint {path} has arch {meta.arch!r}; expected one of {ARCHS}")
    model = build_model(meta.arch, meta.num_classes, meta.in_channels, meta.image_size)
    problems = _state_dict_mismatch(model.state_dict(), state)
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit {meta.arch} with {meta.num_classes} classes "
            f"({problems})"
        )
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def _state_dict_mismatch(expected: dict, found: dict) -> str:
    """A one-line summary of how ``found`` differs from ``expected`` (empty if it fits)."""

    def listed(what: str, keys: list[str]) -> str:
        return f"{len(keys)} {what} ({', '.join(keys[:2])}{', …' if len(keys) > 2 else ''})"

    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [
        f"{key} {list(found[key].shape)} vs {list(value.shape)}"
        for key, value in expected.items()
        if key in found and found[key].shape != value.shape
    ]
    parts = [
        listed(what, keys)
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches found vs expected", shapes),
        )
        if keys
    ]
    return "; ".join(parts)
