"""The result store's schema: one row per finished trial, typed columns only.

This module is the single source of truth for the columns; the README's schema table and the
analysis package both follow it. `dataset` and `arch` are hive partition keys: they live in the
directory names (`dataset=…/arch=…/`), not inside the Parquet files.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

PARTITION_COLUMNS: tuple[str, ...] = ("dataset", "arch")

STATUS_OK = "ok"
STATUS_ERROR = "error"

# (name, type, description). Order is the column order of every file.
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("trial_key", pa.string(), "sha256 of the canonical trial config (checkpoint digest included)"),
    ("key_schema", pa.int64(), "version of the trial-key recipe the key was made with"),
    ("status", pa.string(), "'ok' or 'error'"),
    ("error", pa.string(), "exception type and message when status is 'error', else null"),
    ("attempts", pa.int64(), "how many times the trial ran (retries included)"),
    ("grid", pa.string(), "grid name or grid file stem"),
    ("checkpoint_sha256", pa.string(), "sha256 of the dense checkpoint file"),
    ("num_classes", pa.int64(), "classes of the dataset (chance = 1 / num_classes)"),
    ("allocation", pa.string(), "erk, lamp, uniform, uniform_plus or global"),
    ("sparsity", pa.float64(), "requested global sparsity over the prunable weights"),
    ("achieved_sparsity", pa.float64(), "zeros / prunable weights after pruning"),
    ("repair", pa.string(), "label-free repair method"),
    ("repair_params", pa.string(), "the method's parameters, every default filled in, as JSON"),
    (
        "repair_variant",
        pa.string(),
        "method plus its non-default parameters, e.g. channel_var_shrink[tau=0.5]",
    ),
    ("replicate", pa.int64(), "dense checkpoint replicate: the seed its training ran with"),
    ("seed", pa.int64(), "calibration draw seed (0 for deterministic repairs)"),
    ("calib_size", pa.int64(), "calibration images (train split, no labels)"),
    ("eval_split", pa.string(), "split evaluated on: 'test', or 'val' (held out of train)"),
    ("eval_size", pa.int64(), "evaluation images"),
    (
        "eval_precision",
        pa.string(),
        "arithmetic of the eval forward passes: 'fp32', or 'bf16' autocast; part of the key since "
        "key schema 3",
    ),
    ("dense_top1", pa.float64(), "top-1 of the dense checkpoint on the same eval images"),
    ("top1", pa.float64(), "top-1 accuracy of the pruned and repaired model, 0..1"),
    ("top5", pa.float64(), "top-5 accuracy, null when the dataset has 10 classes or fewer"),
    ("nll", pa.float64(), "mean cross-entropy on the eval images"),
    ("agreement", pa.float64(), "top-1 agreement with the dense model's predictions, 0..1"),
    ("kl", pa.float64(), "mean KL(dense || pruned) over the eval images, nats"),
    (
        "predictions",
        pa.list_(pa.uint16()),
        "predicted class per eval image, in eval-set order (pairs any two trials image by image)",
    ),
    (
        "correct",
        pa.binary(),
        "per eval image 1 if the prediction is right, as numpy.packbits bits (big-endian)",
    ),
    (
        "dense_correct",
        pa.binary(),
        "per eval image 1 if the dense checkpoint is right, packed as `correct` (resampling images "
        "moves r's denominator with its numerator)",
    ),
    ("repair_extra_params", pa.int64(), "parameters the repair added to the model"),
    ("layer_names", pa.list_(pa.string()), "prunable layers in named_modules() order"),
    ("layer_density", pa.list_(pa.float64()), "kept fraction per prunable layer"),
    ("forced_dense", pa.list_(pa.string()), "layers the allocation made fully dense (ERK capping)"),
    (
        "seconds_load",
        pa.float64(),
        "loading checkpoint, data and cached dense artefacts (a cell's shared load split evenly "
        "over its points)",
    ),
    (
        "seconds_prune",
        pa.float64(),
        "computing (or fetching) and applying the masks, split evenly over the cell's points",
    ),
    ("seconds_repair", pa.float64(), "running the repair"),
    ("seconds_eval", pa.float64(), "evaluating on the eval images"),
    ("node", pa.string(), "hostname of the node the trial ran on"),
    ("node_ip", pa.string(), "Ray node IP address"),
    ("node_id", pa.string(), "Ray node id (distinguishes nodes that share a host)"),
    ("gpu_ids", pa.list_(pa.string()), "GPU ids Ray assigned to the trial (empty on CPU)"),
    ("device", pa.string(), "torch device the trial used"),
    ("torch_version", pa.string(), "torch.__version__"),
    ("torchvision_version", pa.string(), "torchvision.__version__"),
    ("ray_version", pa.string(), "ray.__version__"),
    ("prune_sweep_version", pa.string(), "version of this package"),
    ("finished_at", pa.timestamp("us", tz="UTC"), "when the driver recorded the row"),
)


def row_eval_precision(eval_precision: str | None, device: str | None) -> str:
    """A row's eval precision; rows written before the column was added evaluated in bf16 on
    CUDA and in fp32 elsewhere, which their `device` column tells apart."""
    if eval_precision:
        return eval_precision
    return "bf16" if str(device).startswith("cuda") else "fp32"


FILE_SCHEMA = pa.schema([pa.field(name, dtype) for name, dtype, _ in COLUMNS])
RESULT_SCHEMA = pa.schema(
    [pa.field(name, pa.string()) for name in PARTITION_COLUMNS] + list(FILE_SCHEMA)
)


def integer_range(column: str) -> tuple[int, int]:
    """The smallest and largest value an integer column holds: a grid's seeds must fit in the
    row that records them."""
    info = np.iinfo(FILE_SCHEMA.field(column).type.to_pandas_dtype())
    return int(info.min), int(info.max)


COLUMN_DOCS: dict[str, str] = {name: doc for name, _, doc in COLUMNS} | {
    "dataset": "dataset name (partition key)",
    "arch": "architecture name (partition key)",
}
