"""Every architecture the sweep can build: one entry each, holding every fact about it.

Torch-free, so grid validation, CLIs and the analysis can check names and layouts without paying
for torch. `sweep.tasks.models` builds a model from an entry; the training code takes the
classifier's name and whether ImageNet weights exist from it; `sweep.tasks.repair_points` uses the
repair-point family names defined here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.catalog.registry import Registry, named_registry
from sweep.core.errors import UserError

# Inputs at most this large get the small-image layout (3x3 stride-1 stem conv, no max-pool);
# larger ones keep torchvision's ImageNet layout (7x7 stride-2 conv + max-pool).
SMALL_IMAGE_MAX = 64
SMALL, IMAGENET = "small", "imagenet"
LAYOUT_SIZES = {SMALL: f"<= {SMALL_IMAGE_MAX} px", IMAGENET: f"> {SMALL_IMAGE_MAX} px"}

FAMILIES = ("cifar_resnet", "resnet", "densenet", "vgg")

# The builder of He et al.'s CIFAR ResNets (sweep.tasks.models.CifarResNet); any other builder id
# is the name of a torchvision.models function.
CIFAR_RESNET_BUILDER = "cifar_resnet"
# The small-image VGG (sweep.tasks.models.CifarVGG): built natively for small inputs, because
# torchvision's VGG with a small stem would still end in a 25088 -> 4096 -> 4096 classifier.
CIFAR_VGG_BUILDER = "cifar_vgg"

# Repair-point families (see sweep.tasks.repair_points): where a correction acts that no
# BatchNorm can undo.
BLOCK_OUTPUTS = "block_outputs"  # every residual block's output after the add, and the logits
CLASSIFIER_INPUT = "classifier_input"  # the classifier's pooled input, and the logits
CONV_BLOCK_OUTPUTS = "conv_block_outputs"  # each VGG block's last ReLU (before its pool), logits
REPAIR_FAMILIES = (BLOCK_OUTPUTS, CLASSIFIER_INPUT, CONV_BLOCK_OUTPUTS)


def layout_for(image_size: int) -> str:
    """The layout an input side selects: SMALL up to SMALL_IMAGE_MAX px, else IMAGENET."""
    return SMALL if image_size <= SMALL_IMAGE_MAX else IMAGENET


@dataclass(frozen=True)
class ArchInfo:
    """One architecture. Module names are torchvision's, so code can address them by name."""

    name: str
    family: str  # one of FAMILIES
    builder: str  # CIFAR_RESNET_BUILDER, or the torchvision.models function that builds it
    classifier: str  # module name of the final Linear (of the small layout too, unless below)
    repair_family: str  # one of REPAIR_FAMILIES
    residual: bool  # has residual connections
    layouts: tuple[str, ...]  # SMALL and/or IMAGENET
    stem_conv: str  # module name of the first conv (replaced for small or non-RGB inputs)
    stem_pool: str | None  # module the small layout replaces by an identity (None: no pool)
    blocks_per_stage: int | None = None  # n of He et al.'s ResNet-(6n+2); CIFAR builder only
    small_builder: str | None = None  # builds the small layout instead of `builder` + small stem
    small_classifier: str | None = None  # the small layout's final Linear, where it differs
    convs_per_stage: tuple[int, ...] | None = None  # VGG: 3x3 convs before each max-pool
    width_divisor: int = 1  # VGG: every block has VGG's channels divided by this

    def classifier_for(self, image_size: int) -> str:
        """Module name of the final Linear of the model built for `image_size`."""
        if self.small_classifier is not None and layout_for(image_size) == SMALL:
            return self.small_classifier
        return self.classifier

    @property
    def imagenet_weights(self) -> bool:
        """Whether torchvision publishes ImageNet weights to fine-tune from (224 px datasets)."""
        return self.builder not in (CIFAR_RESNET_BUILDER, CIFAR_VGG_BUILDER)

    def check_image_size(self, image_size: int) -> str:
        """The layout for `image_size`; UserError when this architecture has no such layout."""
        layout = layout_for(image_size)
        if layout not in self.layouts:
            allowed = " or ".join(f"{LAYOUT_SIZES[name]} ({name} layout)" for name in self.layouts)
            raise UserError(
                f"arch {self.name!r} has no layout for {image_size} px inputs; "
                f"expected inputs of {allowed}"
            )
        return layout


def _cifar_resnet(depth: int) -> ArchInfo:
    """He et al.'s ResNet-depth for 32 px images: three stages of (depth - 2) / 6 blocks."""
    return ArchInfo(
        name=f"resnet{depth}",
        family="cifar_resnet",
        builder=CIFAR_RESNET_BUILDER,
        classifier="fc",
        repair_family=BLOCK_OUTPUTS,
        residual=True,
        layouts=(SMALL,),
        stem_conv="conv1",
        stem_pool=None,
        blocks_per_stage=(depth - 2) // 6,
    )


def _torchvision_resnet(name: str) -> ArchInfo:
    return ArchInfo(
        name=name,
        family="resnet",
        builder=name,
        classifier="fc",
        repair_family=BLOCK_OUTPUTS,
        residual=True,
        layouts=(SMALL, IMAGENET),
        stem_conv="conv1",
        stem_pool="maxpool",
    )


def _vgg_bn(name: str, convs_per_stage: tuple[int, ...], width_divisor: int = 1) -> ArchInfo:
    """VGG with BatchNorm: torchvision's network for large inputs; for small ones the common CIFAR
    form (the same `features`, max-pools rounding up, a global pool and one 512 -> classes Linear;
    see sweep.tasks.models.CifarVGG). A narrowed VGG (width_divisor > 1) exists in the small form
    only: torchvision has no such network and no weights for it."""
    full_width = width_divisor == 1
    return ArchInfo(
        name=name,
        family="vgg",
        builder=name if full_width else CIFAR_VGG_BUILDER,
        classifier="classifier.6" if full_width else "classifier",
        repair_family=CONV_BLOCK_OUTPUTS,
        residual=False,
        layouts=(SMALL, IMAGENET) if full_width else (SMALL,),
        stem_conv="features.0",
        stem_pool=None,  # no stem pool: the first max-pool ends the first block
        small_builder=CIFAR_VGG_BUILDER,
        small_classifier="classifier",
        convs_per_stage=convs_per_stage,
        width_divisor=width_divisor,
    )


ARCHS: Registry[ArchInfo] = named_registry(
    "arch",
    (
        _cifar_resnet(20),
        _cifar_resnet(32),
        _cifar_resnet(56),
        _torchvision_resnet("resnet18"),
        _torchvision_resnet("resnet34"),
        _torchvision_resnet("resnet50"),
        ArchInfo(
            name="densenet121",
            family="densenet",
            builder="densenet121",
            classifier="classifier",
            repair_family=CLASSIFIER_INPUT,
            residual=False,  # dense concatenations, no residual adds
            layouts=(SMALL, IMAGENET),
            stem_conv="features.conv0",
            stem_pool="features.pool0",
        ),
        _vgg_bn("vgg11_bn", (1, 1, 2, 2, 2)),
        _vgg_bn("vgg16_bn", (2, 2, 3, 3, 3)),
        # VGG-16-BN at a quarter of the width (16-128 channels, 0.92 M weights at 10 classes, 1/16
        # of the multiply-adds): the plain, non-residual network a 2-core machine can train and
        # sweep in the `baselines` grid's budget.
        _vgg_bn("vgg16_bn_quarter", (2, 2, 3, 3, 3), width_divisor=4),
    ),
)
ARCH_NAMES: tuple[str, ...] = tuple(ARCHS)
