"""Will a cell fit its share of a GPU? Checked before Ray starts, where the driver can tell.

A cell keeps on its device, for as long as its worker runs: the eval images (uint8), the batches
of a calibration set (float32) and three copies of the weights (dense, pruned, repaired). That
is a lower bound, not an estimate: activations come on top. A grid whose lower bound already
exceeds the memory `--gpus-per-trial` gives a trial on the local card would only fail on the
GPU, trial after trial, so it is refused up front. Only a local card can be seen: a cluster's
GPUs are not known before its nodes exist.
"""

from __future__ import annotations

from sweep.catalog.datasets import DATASETS
from sweep.core.errors import UserError
from sweep.plan.grid import Grid

FLOAT32_BYTES = 4
WEIGHT_COPIES = 3  # dense, pruned, repaired


def resident_bytes(grid: Grid, dataset: str, weights: int) -> int:
    """What a cell of `dataset` with a `weights`-parameter model keeps on its device at least."""
    info = DATASETS[dataset]
    pixels = info.in_channels * info.image_size**2
    split_size = info.val_size if grid.eval_split == "val" else info.test_size
    eval_images = min(grid.eval_limit or split_size, split_size)
    return (
        eval_images * pixels
        + grid.calib_size * pixels * FLOAT32_BYTES
        + WEIGHT_COPIES * weights * FLOAT32_BYTES
    )


def check_fits(
    grid: Grid, gpus_per_trial: float, device_bytes: int, device_name: str, weights: dict
) -> None:
    """Refuse a grid whose cells cannot fit the share of a `device_bytes` card they ask for;
    `weights`: parameter count per (dataset, arch) of the grid."""
    share = device_bytes * min(gpus_per_trial, 1.0)
    for (dataset, arch), count in weights.items():
        need = resident_bytes(grid, dataset, count)
        if need > share:
            raise UserError(
                f"a cell of {dataset}/{arch} keeps at least {need / 2**30:.2f} GiB on its GPU "
                f"(eval images, a calibration set, three copies of the weights), more than the "
                f"{share / 2**30:.2f} GiB that --gpus-per-trial {gpus_per_trial:g} gives it on "
                f"this {device_bytes / 2**30:.0f} GiB {device_name}; ask for a larger share, or "
                "fewer eval or calibration images"
            )


def check_local_gpu(grid: Grid, gpus_per_trial: float) -> None:
    """`check_fits` against the local CUDA device, when there is one and trials ask for it."""
    import torch

    from sweep.tasks import models

    if gpus_per_trial <= 0 or not torch.cuda.is_available():
        return
    props = torch.cuda.get_device_properties(0)
    weights = {}
    for dataset, arch in grid.pairs:
        info = DATASETS[dataset]
        model = models.build_model(arch, info.num_classes, info.in_channels, info.image_size)
        weights[(dataset, arch)] = sum(p.numel() for p in model.parameters())
    check_fits(grid, gpus_per_trial, props.total_memory, props.name, weights)
