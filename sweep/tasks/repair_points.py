"""Where activation-statistic repair acts: repair points, their affine corrections, the staged plan.

A per-channel affine placed where a BatchNorm consumes the activation is undone by recalibrating
that BatchNorm (BN(a*x + b) = BN(x) for a > 0, up to eps), and without a second recalibration it
breaks the normalisation the first one fitted. A correction must therefore act where no BatchNorm
can reach:

- ResNet (torchvision ResNet and the CIFAR ResNets; repair family `BLOCK_OUTPUTS` in
  `sweep.catalog.archs`): the output of every residual block, after the add and the ReLU (it feeds
  the identity path of the next block and a conv that mixes channels, never a BN directly), and
  the logits.
- DenseNet (repair family `CLASSIFIER_INPUT`): every feature map a dense layer adds to a
  concatenation is consumed only through a BatchNorm (norm1 of each later layer, the transition's
  norm, norm5), so concatenation inputs are reachable and are NOT repair points. What BN cannot
  reach there is the classifier input (norm5 -> ReLU -> global pool: the pooling changes the
  per-channel spread that norm5 fixed) and the logits.
- VGG (repair family `CONV_BLOCK_OUTPUTS`): the output of each conv block, i.e. of the block's last
  ReLU before its max-pool. A positive per-channel affine commutes with the max-pool, and the next
  block's first conv mixes channels before its BatchNorm, so no BN can undo it; the last block's
  output reaches the classifier through pooling only. And the logits.

Each point holds a `ChannelAffine` registered as a child of the module it acts on (named
`repair_out` for the module's output, `repair_in` for its input) and applied by a forward hook, so
the model keeps its original parameter names (masks still apply), pruned conv/linear weights are
never touched, and the model saves as a plain state_dict. To load one: build the architecture, then
`load_repaired_state(model, state_dict)`, which attaches the corrections the state_dict holds
(`attach_repair_points(model)` attaches all of them, as identities) and loads it strictly.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sweep.catalog.archs import BLOCK_OUTPUTS, CLASSIFIER_INPUT, CONV_BLOCK_OUTPUTS
from sweep.core.errors import UserError
from sweep.tasks.repair_passes import Stage

OUT, IN = "repair_out", "repair_in"


class ChannelAffine(nn.Module):
    """y = scale * x + shift per channel (dim 1); identity until fitted."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_channels))
        self.shift = nn.Parameter(torch.zeros(num_channels))

    def reset(self) -> None:
        self.set(np.ones(self.scale.numel()), np.zeros(self.shift.numel()))

    @torch.no_grad()
    def set(self, scale: np.ndarray, shift: np.ndarray) -> None:
        self.scale.copy_(torch.as_tensor(scale, dtype=self.scale.dtype))
        self.shift.copy_(torch.as_tensor(shift, dtype=self.shift.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


def _correct_output(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return getattr(module, OUT)(output)


def _correct_input(module: nn.Module, inputs: tuple) -> tuple:
    return (getattr(module, IN)(inputs[0]), *inputs[1:])


@dataclass(frozen=True)
class RepairPoint:
    """One repair point: `name` is the qualified name of its ChannelAffine."""

    host: str
    side: str  # OUT or IN
    channels: int

    @property
    def name(self) -> str:
        return f"{self.host}.{self.side}"


def repair_family(model: nn.Module) -> str:
    """The model's repair-point family (see `sweep.catalog.archs`), read off its structure.

    Structural, not by arch name, so any torchvision-layout ResNet, DenseNet or VGG works, built by
    `build_model` or not; the catalog test checks it agrees with every entry's `repair_family`.
    """
    if _vgg_block_ends(model) and _vgg_logits(model) is not None:
        return CONV_BLOCK_OUTPUTS
    if isinstance(getattr(model, "fc", None), nn.Linear) and isinstance(
        getattr(model, "layer1", None), nn.Sequential
    ):
        return BLOCK_OUTPUTS
    if isinstance(getattr(model, "classifier", None), nn.Linear) and isinstance(
        getattr(model, "features", None), nn.Sequential
    ):
        return CLASSIFIER_INPUT
    raise UserError(
        f"no repair points are defined for {type(model).__name__}; activation-statistic repair "
        "supports ResNet (conv1/layer1../fc), DenseNet (features/classifier) and VGG "
        "(a plain conv/BN/ReLU/max-pool features stack, avgpool, classifier) models"
    )


_PLAIN_CONV_STACK = (nn.Conv2d, _BatchNorm, nn.ReLU, nn.MaxPool2d)


def _vgg_block_ends(model: nn.Module) -> list[int]:
    """Indices in `features` of the ReLUs right before a max-pool; [] unless VGG-like: `features`
    a flat conv/BN/ReLU/max-pool stack, and an `avgpool`."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or not hasattr(model, "avgpool"):
        return []
    layers = list(features)
    if not all(isinstance(layer, _PLAIN_CONV_STACK) for layer in layers):
        return []
    return [
        index
        for index, layer in enumerate(layers[:-1])
        if isinstance(layer, nn.ReLU) and isinstance(layers[index + 1], nn.MaxPool2d)
    ]


def _vgg_logits(model: nn.Module) -> str | None:
    """Name of the final Linear: `classifier` itself, or the last module of a Sequential one."""
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Sequential) and len(classifier):
        name, last = list(classifier.named_children())[-1]
        return f"classifier.{name}" if isinstance(last, nn.Linear) else None
    return "classifier" if isinstance(classifier, nn.Linear) else None


def _vgg_points(model: nn.Module) -> list[RepairPoint]:
    layers = list(model.features)
    points = []
    for end in _vgg_block_ends(model):
        norms = [m for m in layers[:end] if isinstance(m, _BatchNorm)]
        if not norms:
            raise UserError(f"VGG block ending at features.{end} has no BatchNorm to size it")
        points.append(RepairPoint(f"features.{end}", OUT, norms[-1].num_features))
    logits = _vgg_logits(model)
    return [*points, RepairPoint(logits, OUT, model.get_submodule(logits).out_features)]


def _resnet_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    blocks = []
    index = 1
    while isinstance(layer := getattr(model, f"layer{index}", None), nn.Sequential):
        blocks += [(f"layer{index}.{name}", block) for name, block in layer.named_children()]
        index += 1
    return blocks


def _block_channels(block: nn.Module) -> int:
    norms = [m for m in block.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        raise UserError(f"residual block {type(block).__name__} has no BatchNorm to size it")
    return norms[-1].num_features


def repair_points(model: nn.Module) -> list[RepairPoint]:
    """The model's repair points in forward order (see the module docstring for the choice)."""
    family = repair_family(model)
    if family == BLOCK_OUTPUTS:
        points = [RepairPoint(name, OUT, _block_channels(b)) for name, b in _resnet_blocks(model)]
        return points + [RepairPoint("fc", OUT, model.fc.out_features)]
    if family == CONV_BLOCK_OUTPUTS:
        return _vgg_points(model)
    return [
        RepairPoint("classifier", IN, model.classifier.in_features),
        RepairPoint("classifier", OUT, model.classifier.out_features),
    ]


def attach_repair_points(model: nn.Module, names: Collection[str] | None = None) -> nn.Module:
    """Give the named repair points (default: all) an identity ChannelAffine, in place.

    Corrections already attached are reset to identity, named or not.
    """
    for point in repair_points(model):
        host = model.get_submodule(point.host)
        existing = getattr(host, point.side, None)
        if isinstance(existing, ChannelAffine):
            existing.reset()
            continue
        if names is not None and point.name not in names:
            continue
        device = next(model.parameters()).device  # a ReLU host has no parameters of its own
        host.add_module(point.side, ChannelAffine(point.channels).to(device))
        if point.side == OUT:
            host.register_forward_hook(_correct_output)
        else:
            host.register_forward_pre_hook(_correct_input)
    return model


def _point_names(state_dict: Mapping[str, torch.Tensor]) -> set[str]:
    return {
        key.rsplit(".", 1)[0] for key in state_dict if key.rsplit(".", 2)[-2:-1] in ([OUT], [IN])
    }


def has_repair_points(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return bool(_point_names(state_dict))


def load_repaired_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a (possibly) repaired state_dict into a freshly built model of the same architecture:
    attaches exactly the corrections the state_dict holds, then loads it strictly."""
    names = _point_names(state_dict)
    if names:
        attach_repair_points(model, names)
    model.load_state_dict(state_dict)
    return model


def repair_param_count(model: nn.Module) -> int:
    """Parameters added by repair corrections (0 for a model without repair points)."""
    return sum(
        p.numel() for m in model.modules() if isinstance(m, ChannelAffine) for p in m.parameters()
    )


class _StemReached(Exception):
    def __init__(self, value: torch.Tensor) -> None:
        self.value = value


def _stop_with_input(module: nn.Module, inputs: tuple) -> None:
    raise _StemReached(inputs[0])


def _resnet_stages(model: nn.Module) -> list[Stage]:
    blocks = _resnet_blocks(model)

    def stem(x: torch.Tensor) -> torch.Tensor:
        # Run the model's own forward up to the first block's input, whatever its stem looks like.
        handle = blocks[0][1].register_forward_pre_hook(_stop_with_input)
        try:
            model(x)
        except _StemReached as reached:
            return reached.value
        finally:
            handle.remove()
        raise UserError(f"{type(model).__name__}.forward never reached {blocks[0][0]}")

    def head(x: torch.Tensor) -> torch.Tensor:
        pooled = model.avgpool(x) if hasattr(model, "avgpool") else F.adaptive_avg_pool2d(x, 1)
        return model.fc.forward(torch.flatten(pooled, 1))

    # `.forward` bypasses the block's own correction hook: the stage yields the raw output.
    stages = [Stage(stem, None)]
    stages += [Stage(block.forward, f"{name}.{OUT}") for name, block in blocks]
    return stages + [Stage(head, f"fc.{OUT}")]


def _densenet_stages(model: nn.Module) -> list[Stage]:
    def trunk(x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(F.relu(model.features(x)), 1)
        return torch.flatten(pooled, 1)

    return [Stage(trunk, f"classifier.{IN}"), Stage(model.classifier.forward, f"classifier.{OUT}")]


def _raw_chain(modules: list[nn.Module]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Run `modules` in order; the last by `.forward`, bypassing its own correction hook, so the
    stage yields the raw output at its repair point."""

    def run(x: torch.Tensor) -> torch.Tensor:
        for module in modules[:-1]:
            x = module(x)
        return modules[-1].forward(x)

    return run


def _vgg_stages(model: nn.Module) -> list[Stage]:
    """features block by block, then the last max-pool, avgpool, flatten and the classifier (as
    torchvision's VGG.forward)."""
    layers = list(model.features)
    stages, start = [], 0
    for end in _vgg_block_ends(model):
        stages.append(Stage(_raw_chain(layers[start : end + 1]), f"features.{end}.{OUT}"))
        start = end + 1
    classifier = model.classifier
    head = list(classifier) if isinstance(classifier, nn.Sequential) else [classifier]
    tail = [*layers[start:], model.avgpool, nn.Flatten(1), *head]
    return [*stages, Stage(_raw_chain(tail), f"{_vgg_logits(model)}.{OUT}")]


def stage_plan(model: nn.Module) -> list[Stage]:
    """The model's forward split at its repair points, in order; composes to `model.forward`."""
    family = repair_family(model)
    if family == BLOCK_OUTPUTS:
        return _resnet_stages(model)
    if family == CONV_BLOCK_OUTPUTS:
        return _vgg_stages(model)
    return _densenet_stages(model)
