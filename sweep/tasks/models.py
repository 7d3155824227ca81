"""Architectures and dense checkpoints.

Every model is built from its entry in :mod:`sweep.catalog.archs` and keeps torchvision's module
names (``conv1``/``bn1``/``layer1``…/``fc`` for ResNets, ``features.*``/``classifier`` for
DenseNet and VGG) so that pruning and repair code can walk all of them alike, and so that a
checkpoint's state_dict keys are the ones torchvision users expect.

A checkpoint is one *replicate*: the dense model of a (dataset, arch) trained with seed N, a
plain state_dict file ``<dir>/<dataset>/<arch>-seed<N>.pt`` (loaded with ``weights_only=True``, so
opening one never runs code) plus a JSON sidecar ``<arch>-seed<N>.json`` that says what the
weights are: the seed, the validation split training held out, their sha256 and the digest of the
architecture's layout (:func:`arch_digest`). So a truncated, replaced or mismatched file, another
replicate, or one that is outdated (trained for an older layout of its architecture, or before
the validation split existed) is refused with a one-line :class:`CheckpointError` instead of
silently pruning the wrong network.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock

from sweep.catalog.archs import (
    ARCHS,
    CIFAR_RESNET_BUILDER,
    CIFAR_VGG_BUILDER,
    SMALL,
    ArchInfo,
)
from sweep.catalog.datasets import DATASETS
from sweep.core import paths
from sweep.core.atomic import atomic_path, atomic_write
from sweep.core.errors import CheckpointError, UserError


class ZeroPadShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample by ``stride``, zero-pad the new channels.

    Parameter-free, so the CIFAR ResNets have the paper's parameter counts and the shortcut adds
    nothing to prune; it sits where torchvision's projection would (``downsample``).
    """

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels, self.stride = extra_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


class CifarResNet(nn.Module):
    """ResNet-6n+2 of He et al. (2016) for 32 px inputs: stages of 16/32/64 channels.

    Every block is torchvision's :class:`BasicBlock` with a plain residual add; where the shape
    changes its ``downsample`` is a :class:`ZeroPadShortcut` (option A). Attribute names match
    torchvision's ResNet (``layer4`` is simply absent).
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
            shortcut = None
            if block_stride != 1 or self.inplanes != planes:
                shortcut = ZeroPadShortcut(planes - self.inplanes, block_stride)
            layers.append(BasicBlock(self.inplanes, planes, block_stride, shortcut))
            self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


VGG_WIDTHS = (64, 128, 256, 512, 512)  # channels of VGG's five blocks (Simonyan & Zisserman)


def _vgg_features(
    convs_per_stage: tuple[int, ...], in_channels: int, widths: tuple[int, ...]
) -> nn.Sequential:
    """VGG's conv stack with BatchNorm, laid out (and so indexed) as torchvision's ``features``:
    per block its 3x3 conv -> BN -> ReLU triples, then a 2x2 max-pool that rounds up."""
    layers: list[nn.Module] = []
    for convs, width in zip(convs_per_stage, widths, strict=True):
        for _ in range(convs):
            conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
            layers += [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            in_channels = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    """VGG with BatchNorm for small images: the common CIFAR form of VGG-16-BN.

    ``features`` is torchvision's (same keys and shapes), except that the max-pools round up, so
    28 px inputs end at 1x1 like 32 px ones (28 -> 14 -> 7 -> 4 -> 2 -> 1; 32 px is unchanged).
    Then a global average pool (the identity on a 1x1 map; it keeps larger small inputs working)
    and one 512 -> classes Linear (a narrowed VGG: its last width), instead of torchvision's
    25088 -> 4096 -> 4096 -> classes head, which would hold most of the weights and only sees a
    1x1 map here. Init as torchvision's VGG.
    """

    def __init__(
        self,
        convs_per_stage: tuple[int, ...],
        num_classes: int,
        in_channels: int = 3,
        width_divisor: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(width // width_divisor for width in VGG_WIDTHS)
        self.features = _vgg_features(convs_per_stage, in_channels, widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _stem_conv(old: nn.Conv2d, in_channels: int, small: bool) -> nn.Conv2d:
    """The replacement stem conv: 3x3 stride 1 for small images, else ``old``'s geometry (ImageNet
    ResNet/DenseNet: 7x7 stride 2), for ``in_channels`` inputs."""
    kernel, stride, padding = (3, 1, 1) if small else (old.kernel_size, old.stride, old.padding)
    conv = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel,
        stride=stride,
        padding=padding,
        bias=old.bias is not None,
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def _adapt_stem(model: nn.Module, info: ArchInfo, in_channels: int, small: bool) -> None:
    """Swap stem modules in place; the replaced names keep the state_dict keys torchvision's."""
    if small or in_channels != 3:
        old = model.get_submodule(info.stem_conv)
        _replace(model, info.stem_conv, _stem_conv(old, in_channels, small))
    if small and info.stem_pool is not None:
        _replace(model, info.stem_pool, nn.Identity())


def build_model(
    arch: str, num_classes: int, in_channels: int = 3, image_size: int = 32
) -> nn.Module:
    """A freshly initialised model; ``image_size <= 64`` selects the small-image layout."""
    info = ARCHS[arch]
    layout = info.check_image_size(image_size)
    if info.builder == CIFAR_RESNET_BUILDER:
        return CifarResNet(info.blocks_per_stage, num_classes, in_channels)
    if layout == SMALL and info.small_builder == CIFAR_VGG_BUILDER:
        return CifarVGG(info.convs_per_stage, num_classes, in_channels, info.width_divisor)
    model = getattr(tvm, info.builder)(weights=None, num_classes=num_classes)
    _adapt_stem(model, info, in_channels, small=layout == SMALL)
    return model


# --------------------------------------------------------------------------- layouts

Layout = tuple[tuple[str, tuple[int, ...]], ...]


def state_layout(state: dict[str, torch.Tensor]) -> Layout:
    """A state_dict's key names and shapes, in its order."""
    return tuple((key, tuple(value.shape)) for key, value in state.items())


@functools.lru_cache(maxsize=64)
def arch_layout(arch: str, num_classes: int, in_channels: int, image_size: int) -> Layout:
    """The state_dict layout ``build_model`` gives (built on the meta device: no weights)."""
    with torch.device("meta"):
        return state_layout(build_model(arch, num_classes, in_channels, image_size).state_dict())


def layout_digest(layout: Layout) -> str:
    """A short sha256 of a layout: equal exactly when key names and shapes are equal."""
    text = json.dumps(sorted([key, list(shape)] for key, shape in layout))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def arch_digest(arch: str, num_classes: int, in_channels: int, image_size: int) -> str:
    """The digest of the layout this version builds; stored in every checkpoint's sidecar."""
    return layout_digest(arch_layout(arch, num_classes, in_channels, image_size))


# --------------------------------------------------------------------------- checkpoints


class OutdatedCheckpointError(CheckpointError):
    """A sound checkpoint that this version must not use; the message says how to retrain it."""


class OldLayoutError(OutdatedCheckpointError):
    """A checkpoint trained for an older layout of its architecture."""


class StaleCheckpointError(OutdatedCheckpointError):
    """A checkpoint trained before the validation split existed: it has seen those images."""


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
    arch_digest: str = ""  # empty in sidecars written before layouts were recorded
    seed: int | None = None  # the replicate: its training seed (None in older sidecars)
    held_out: dict | None = None  # the validation split training left out (`Holdout.record`);
    # None in sidecars written before it existed, whose training saw those images

    @classmethod
    def from_dict(cls, data: dict) -> CheckpointMeta:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def _settings(meta: CheckpointMeta) -> str:
    return f"{meta.num_classes} classes, {meta.in_channels} input channels at {meta.image_size} px"


def arch_layout_of(meta: CheckpointMeta) -> Layout:
    """The layout this version builds for a checkpoint's arch, classes, channels and size."""
    return arch_layout(meta.arch, meta.num_classes, meta.in_channels, meta.image_size)


_SIDECAR_TYPES = {
    "arch": str,
    "dataset": str,
    "num_classes": int,
    "in_channels": int,
    "image_size": int,
    "sha256": str,
    "arch_digest": str,
}


def _check_sidecar_fields(meta: CheckpointMeta) -> None:
    """ValueError naming the first field of a wrong type or value."""
    for name, kind in _SIDECAR_TYPES.items():
        value = getattr(meta, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{name} {value!r} is not a {kind.__name__}")
        if kind is int and value < 1:
            raise ValueError(f"{name} {value!r} is not positive")
    _check_sha256("sha256", meta.sha256)
    if meta.seed is not None and not _is_seed(meta.seed):
        raise ValueError(f"seed {meta.seed!r} is not an integer from 0 to {MAX_SEED}")
    if meta.held_out is not None:
        if not isinstance(meta.held_out, dict):
            raise ValueError(f"held_out {meta.held_out!r} is not an object")
        _check_sha256("held_out.sha256", meta.held_out.get("sha256"))


def _check_sha256(name: str, value: object) -> None:
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise ValueError(f"{name} {str(value)[:20]!r} is not 64 hex digits")


MAX_SEED = 2**32 - 1  # torch seeds are 64-bit; training derives per-epoch seeds from this one


def _is_seed(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def check_seed(seed: object) -> int:
    """A replicate seed: an integer from 0 to MAX_SEED (UserError otherwise, naming it)."""
    if not _is_seed(seed):
        raise UserError(f"seed {seed!r} is not allowed; expected an integer from 0 to {MAX_SEED}")
    return seed


def checkpoint_path(checkpoint_dir: Path | str, dataset: str, arch: str, replicate: int) -> Path:
    """`sweep.core.paths.checkpoint_file`, for a replicate seed that is checked first."""
    return paths.checkpoint_file(checkpoint_dir, dataset, arch, check_seed(replicate))


def sidecar_path(path: Path | str) -> Path:
    return Path(path).with_suffix(".json")


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_torch_save(obj: object, path: Path | str) -> None:
    """torch.save that never leaves a half-written file at ``path``."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_checkpoint(model: nn.Module, path: Path | str, meta: CheckpointMeta) -> CheckpointMeta:
    """Write state_dict + sidecar atomically; returns ``meta`` with sha256, created_at and
    arch_digest filled. UserError, before writing, if the model is not ``meta``'s architecture."""
    path = Path(path)
    # contiguous(): channels_last training must not change the stored layout.
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    found, expected = state_layout(state), arch_layout_of(meta)
    if dict(found) != dict(expected):
        raise UserError(
            f"model to save as {path} is not {meta.arch} with {_settings(meta)} "
            f"({_state_dict_mismatch(dict(expected), dict(found))})"
        )
    # Weights renamed first (the later context exits first): a crash between the two renames leaves
    # a sha mismatch, which loading detects, never a sidecar vouching for weights it does not
    # describe.
    with atomic_path(sidecar_path(path)) as sidecar_tmp, atomic_path(path) as weights_tmp:
        torch.save(state, weights_tmp)
        meta = dataclasses.replace(
            meta,
            sha256=file_sha256(weights_tmp),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            arch_digest=layout_digest(found),
        )
        sidecar_tmp.write_text(json.dumps(dataclasses.asdict(meta), indent=2) + "\n")
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
        meta = CheckpointMeta.from_dict(json.loads(sidecar.read_text()))
        _check_sidecar_fields(meta)
    except (ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"checkpoint sidecar {sidecar} is malformed ({_one_line(error)}); "
            "expected a JSON object with arch, dataset, num_classes, in_channels, image_size, "
            "sha256 as written by python -m sweep.pretrain"
        ) from error
    return meta


_SEEDED_NAME = re.compile(r"(?P<arch>.+)-seed(?P<seed>\d+)")


def _retrain_command(path: Path, dataset: str | None, arch: str | None, seed: int | None) -> str:
    """The pretrain command that (re)writes the checkpoint at ``path``; what is not given is read
    from the path (``<out>/<dataset>/<arch>-seed<N>.pt``)."""
    named = _SEEDED_NAME.fullmatch(path.stem)
    dataset = dataset or path.parent.name
    arch = arch or (named["arch"] if named else path.stem)
    seed = seed if seed is not None else int(named["seed"]) if named else None
    command = f"python -m sweep.pretrain --dataset {dataset} --arch {arch}"
    if seed is not None:
        command += f" --seed {seed}"
        out = path.parent.parent
        if checkpoint_path(out, dataset, arch, seed) == path and out != paths.CHECKPOINTS:
            command += f" --checkpoints {out}"
    return command


def _checked_state(
    path: Path | str, **expected: object
) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """Sidecar and weights of a checkpoint, after every check short of building the model;
    ``expected`` maps sidecar fields to the values asked for (None: anything)."""
    path = Path(path)
    if not path.is_file():
        command = _retrain_command(
            path, expected.get("dataset"), expected.get("arch"), expected.get("seed")
        )
        raise CheckpointError(f"checkpoint {path} not found; train it with {command}")
    meta = read_meta(path)
    for name, wanted in expected.items():
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
    try:
        expected = arch_layout_of(meta)
    except UserError as error:  # an arch or input size the catalog does not have
        raise CheckpointError(f"checkpoint {path} cannot be built: {error}") from error
    _check_layout(path, meta, expected, state_layout(state))
    return meta, state


def _check_layout(path: Path, meta: CheckpointMeta, expected: Layout, found: Layout) -> None:
    """The weights must fit the layout this version builds; a sidecar's recorded digest (or, in
    sidecars that predate it, the weights' own layout) tells an older layout from a bad file."""
    current = layout_digest(expected)
    problems = _state_dict_mismatch(dict(expected), dict(found))
    recorded = meta.arch_digest or (layout_digest(found) if problems else current)
    if recorded != current:
        raise OldLayoutError(
            f"checkpoint {path} was trained for an older layout of {meta.arch} (layout "
            f"{recorded}; this version builds {current} for {_settings(meta)}); retrain it with "
            f"{_retrain_command(path, meta.dataset, meta.arch, meta.seed)} --force"
        )
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit {meta.arch} with {_settings(meta)} ({problems})"
        )


def verify_checkpoint(path: Path | str, dataset: str, arch: str, replicate: int) -> CheckpointMeta:
    """Everything a sweep must know about a checkpoint before it starts, without building it.

    The sidecar is present and well-formed, arch and dataset (and the dataset's classes, channels
    and input size) are the ones asked for, the file's sha256 is the sidecar's, the file is a
    torch state_dict, the weights fit the layout this version builds, training held out the
    validation split (else StaleCheckpointError) and its seed is ``replicate``. Any failure is
    one CheckpointError line naming the file and what is wrong.
    """
    spec = DATASETS[dataset]
    check_seed(replicate)
    path = Path(path)
    meta, _ = _checked_state(
        path,
        arch=arch,
        dataset=dataset,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
    )
    if meta.held_out is None:
        raise StaleCheckpointError(
            f"checkpoint {path} was trained before the validation split existed, so on the "
            f"validation images too (its sidecar records no held-out split); retrain it with "
            f"{_retrain_command(path, dataset, arch, replicate)} --force"
        )
    if meta.seed != replicate:
        raise CheckpointError(f"checkpoint {path} has seed {meta.seed!r}; expected {replicate}")
    return meta


def load_checkpoint(
    path: Path | str,
    arch: str | None = None,
    dataset: str | None = None,
    num_classes: int | None = None,
    replicate: int | None = None,
) -> tuple[nn.Module, CheckpointMeta]:
    """The model of a checkpoint in eval mode, after checking it is the one that was asked for
    (None: anything); `verify_checkpoint` is the full check a sweep runs first."""
    meta, state = _checked_state(
        path, arch=arch, dataset=dataset, num_classes=num_classes, seed=replicate
    )
    model = build_model(meta.arch, meta.num_classes, meta.in_channels, meta.image_size)
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def _state_dict_mismatch(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]
) -> str:
    """A one-line summary of how ``found`` (key -> shape) differs from ``expected``."""

    def listed(what: str, keys: list[str]) -> str:
        return f"{len(keys)} {what} ({', '.join(keys[:2])}{', …' if len(keys) > 2 else ''})"

    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [
        f"{key} {list(found[key])} vs {list(shape)}"
        for key, shape in expected.items()
        if key in found and found[key] != shape
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
