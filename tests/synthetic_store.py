"""Synthetic result stores in the real schema: a test fixture for the analysis and its benchmark.

Why: the analysis must be tested on answers worked out by hand and measured on a million rows,
neither of which a real sweep on this machine can provide. Every row goes through
`ResultStore.write_many`, so a synthetic store is read by exactly the code that reads a real one.
Rows are of trial-key schema 2: `key_schema` and `repair_variant` filled, parameters in the key.

Two levels: `make_row` / `curve_rows` build hand-specified rows (tests), `SyntheticGrid` draws a
whole seeded grid of logistic recovery curves with replicate and seed noise (benchmark, report
demos).

Per-image results. Every image i of a dataset's eval set has a fixed difficulty u_i ~ U(0, 1) (the
eval set is a sample of images, shared by every row: the pairing the bootstrap relies on). A row
scores each image with u_i + IMAGE_NOISE · (e_replicate,i + e_seed,i + e_row,i) / √3, the noise
terms standard normal and keyed by (dataset, replicate), (dataset, replicate, seed) and the trial
key, so two rows of one replicate, or of one calibration draw, err on similar images. A row given
its top-1 (`make_row`) is right on exactly the round(top1 · N) images with the lowest scores; a
grid row (`SyntheticGrid`) is right where the score is below its expected accuracy, and its top-1
is what that gives, so image sampling adds real noise to it.

The dense checkpoint of a replicate scores each image with u_i + IMAGE_NOISE · (e_replicate,i +
e_dense,i) / √2 and is right on the round(dense_top1 · N) lowest-scoring images: every row of one
checkpoint carries the same `dense_correct`, consistent with its `dense_top1`, and the dense model
errs where its pruned models tend to (the shared replicate term). `dense_images=False` writes a
row without it, as a store written before the column was.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweep.plan.identity import KEY_SCHEMA  # rows of today's key schema
from sweep.plan.variants import variant_name
from sweep.results.schema import FILE_SCHEMA, PARTITION_COLUMNS, STATUS_ERROR, STATUS_OK
from sweep.results.store import ResultStore

# Columns a schema-1 file lacks (sweep.results.store recognises such a file by exactly these).
KEY_SCHEMA_2_COLUMNS = (
    *("key_schema", "repair_variant", "replicate", "eval_split", "predictions", "correct"),
)
# A repair of a synthetic grid: a method name, or (method, its non-default parameters).
Repair = str | tuple[str, Mapping[str, object]]

NUM_CLASSES = {
    "fashion_mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "imagenette": 10,
    "imagenet100": 100,
}
DENSE_TOP1 = {
    "fashion_mnist": 0.93,
    "cifar10": 0.95,
    "cifar100": 0.77,
    "imagenette": 0.90,
    "imagenet100": 0.82,
}
# Prunable layer counts of the project's architectures (Conv2d + Linear).
LAYER_COUNTS = {
    "resnet20": 22,
    "resnet32": 34,
    "resnet56": 58,
    "resnet18": 21,
    "resnet34": 37,
    "resnet50": 54,
    "densenet121": 121,
}
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
EVAL_SIZE = 2000
IMAGE_NOISE = 0.15


def _stable(*parts: object) -> int:
    """A seed for numpy from any labels, the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


@functools.cache
def difficulty(dataset: str, eval_size: int, eval_seed: int = 0) -> np.ndarray:
    """u_i of each eval image: which images are hard is a property of the eval set."""
    return np.random.default_rng(_stable("difficulty", dataset, eval_size, eval_seed)).random(
        eval_size
    )


@functools.cache
def _noise(eval_size: int, *key: object) -> np.ndarray:
    return np.random.default_rng(_stable("noise", eval_size, *key)).standard_normal(eval_size)


def image_scores(
    dataset: str, eval_size: int, replicate: int, seed: int, row_key: str, eval_seed: int = 0
) -> np.ndarray:
    """Per image: low = easy for this row (module docstring)."""
    shared = _noise(eval_size, dataset, eval_seed, replicate) + _noise(
        eval_size, dataset, eval_seed, replicate, seed
    )
    own = np.random.default_rng(_stable("row", row_key)).standard_normal(eval_size)
    return difficulty(dataset, eval_size, eval_seed) + IMAGE_NOISE * (shared + own) / math.sqrt(3)


def dense_scores(dataset: str, eval_size: int, replicate: int, eval_seed: int = 0) -> np.ndarray:
    """Per image for the replicate's dense checkpoint: low = easy (module docstring)."""
    shared = _noise(eval_size, dataset, eval_seed, replicate)
    own = _noise(eval_size, "dense", dataset, eval_seed, replicate)
    return difficulty(dataset, eval_size, eval_seed) + IMAGE_NOISE * (shared + own) / math.sqrt(2)


def pack(correct: np.ndarray) -> bytes:
    """The store's `correct` column: numpy.packbits of the 0/1 vector, big-endian bit order."""
    return np.packbits(np.asarray(correct, dtype=np.uint8)).tobytes()


def exactly(scores: np.ndarray, top1: float) -> np.ndarray:
    """Right on the round(top1 · N) lowest-scoring images."""
    correct = np.zeros(len(scores), bool)
    k = int(round(min(max(top1, 0.0), 1.0) * len(scores)))
    correct[np.argsort(scores, kind="stable")[:k]] = True
    return correct


def top1_for(r: float, num_classes: int, dense_top1: float) -> float:
    """The top-1 whose normalised accuracy is r (inverse of (top1 - chance) / (dense - chance))."""
    chance = 1.0 / num_classes
    return chance + r * (dense_top1 - chance)


@functools.cache
def layer_names(arch: str) -> tuple[str, ...]:
    count = LAYER_COUNTS.get(arch, 20)
    return ("conv1", *(f"block{i}.conv" for i in range(1, count - 1)), "fc")


@functools.cache
def layer_density(arch: str, allocation: str, sparsity: float) -> tuple[float, ...]:
    """A plausible per-layer profile: ERK spends more density early, LAMP flatter, mean 1 - s."""
    count = LAYER_COUNTS.get(arch, 20)
    depth = np.linspace(0.0, 1.0, count)
    shape = {"erk": 2.0 - 1.5 * depth, "lamp": 1.3 - 0.5 * depth}.get(allocation, np.ones(count))
    density = np.clip(shape * (1.0 - sparsity) / shape.mean(), 0.0, 1.0)
    density[0] = density[-1] = min(1.0, 4 * (1.0 - sparsity))
    return tuple(round(float(d), 6) for d in density)


def trial_key(**config: object) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def make_row(
    *,
    dataset: str = "cifar10",
    arch: str = "resnet18",
    allocation: str = "erk",
    sparsity: float = 0.9,
    repair: str = "none",
    params: Mapping[str, object] | None = None,
    seed: int = 0,
    top1: float | None = 0.5,
    num_classes: int | None = None,
    dense_top1: float | None = None,
    status: str = STATUS_OK,
    agreement: float | None = None,
    grid: str = "synthetic",
    order: int = 0,
    calib_size: int = 1024,
    replicate: int = 0,
    eval_split: str = "test",
    eval_size: int = EVAL_SIZE,
    images: bool = True,
    correct: np.ndarray | None = None,
    eval_seed: int = 0,
    eval_precision: str | None = "fp32",
    device: str = "cpu",
    dense_images: bool = True,
) -> dict:
    """One complete row of the result schema; unspecified fields get plausible values.

    `repair` is the method and `params` its non-default parameters: together the variant.
    `order` spaces finished_at (later rows win a trial-key tie); another `calib_size` makes a
    distinct trial of the same point and variant, which the analysis must flag as a duplicate.
    Per-image results (`predictions`, `correct`) follow the module docstring: `correct` as given
    (a 0/1 vector), else right on round(top1 · N) images; `images=False` leaves them null, as in a
    store written before they were recorded (the analysis then cannot resample images), and
    `eval_precision=None` is a row written before that column. A row with per-image results also
    carries its dense checkpoint's (`dense_correct`, module docstring) unless `dense_images` is
    False (a row written before that column).
    """
    params = dict(params or {})
    num_classes = num_classes or NUM_CLASSES.get(dataset, 10)
    dense_top1 = DENSE_TOP1.get(dataset, 0.9) if dense_top1 is None else dense_top1
    ok = status == STATUS_OK
    if ok and agreement is None and top1 is not None:
        agreement = min(1.0, max(0.0, top1 / max(dense_top1, 1e-9)))
    config = dict(
        dataset=dataset,
        arch=arch,
        allocation=allocation,
        sparsity=sparsity,
        repair=repair,
        params=params,
        seed=seed,
        calib_size=calib_size,
        replicate=replicate,
        eval_split=eval_split,
        eval_size=eval_size,
    )
    key = trial_key(**config)
    bits = predictions = dense_bits = None
    if ok and top1 is not None and (images or correct is not None):
        if correct is None:
            scores = image_scores(dataset, eval_size, replicate, seed, key, eval_seed)
            correct = exactly(scores, top1)
        correct = np.asarray(correct, bool)
        bits = pack(correct)
        labels = np.arange(eval_size) % num_classes  # a right prediction is the label
        predictions = np.where(correct, labels, (labels + 1) % num_classes).astype(np.uint16)
        if dense_images:
            dense_bits = pack(
                exactly(dense_scores(dataset, eval_size, replicate, eval_seed), dense_top1)
            )
    values = {
        "dataset": dataset,
        "arch": arch,
        "trial_key": key,
        "key_schema": KEY_SCHEMA,
        "status": status,
        "error": None if ok else "RuntimeError: synthetic failure",
        "attempts": 1 if ok else 3,
        "grid": grid,
        "checkpoint_sha256": trial_key(dataset=dataset, arch=arch, replicate=replicate),
        "num_classes": num_classes,
        "allocation": allocation,
        "sparsity": sparsity,
        "achieved_sparsity": sparsity,
        "repair": repair,
        "repair_params": json.dumps(params, sort_keys=True),
        "repair_variant": variant_name(repair, params),
        "replicate": replicate,
        "seed": seed,
        "calib_size": calib_size,
        "eval_split": eval_split,
        "eval_size": eval_size,
        "eval_precision": eval_precision,
        "predictions": predictions,
        "correct": bits,
        "dense_correct": dense_bits,
        "dense_top1": dense_top1,
        "top1": top1 if ok else None,
        "top5": min(1.0, top1 + 0.2) if ok and top1 is not None and num_classes > 10 else None,
        "nll": -math.log(max(top1, 1e-3)) if ok and top1 is not None else None,
        "agreement": agreement if ok else None,
        "kl": 1.0 - agreement if ok and agreement is not None else None,
        "repair_extra_params": 0,
        "layer_names": layer_names(arch),
        "layer_density": layer_density(arch, allocation, sparsity),
        "forced_dense": [],
        "seconds_load": 0.1,
        "seconds_prune": 0.1,
        "seconds_repair": 0.1,
        "seconds_eval": 0.1,
        "node": "synthetic",
        "node_ip": "127.0.0.1",
        "gpu_ids": [],
        "device": device,
        "torch_version": "2.14.1",
        "torchvision_version": "0.29.1",
        "ray_version": "2.60.0",
        "prune_sweep_version": "0.1.0",
        "finished_at": _EPOCH + timedelta(seconds=order),
    }
    # Exactly the current schema: columns added later (provenance, mostly) stay null.
    return {name: values.get(name) for name in (*PARTITION_COLUMNS, *FILE_SCHEMA.names)}


def grid_row(accuracy: float, eval_seed: int = 0, **fields: object) -> dict:
    """A row whose images are right where their score is below `accuracy`; top-1 is the
    fraction right, so it carries the eval set's sampling noise (module docstring)."""
    probe = make_row(images=False, eval_seed=eval_seed, **fields)
    scores = image_scores(
        probe["dataset"],
        probe["eval_size"],
        probe["replicate"],
        probe["seed"],
        probe["trial_key"],
        eval_seed,
    )
    correct = scores < accuracy
    return make_row(top1=float(correct.mean()), correct=correct, eval_seed=eval_seed, **fields)


def curve_rows(
    r_by_seed: Sequence[Sequence[float | None]],
    sparsities: Sequence[float],
    *,
    num_classes: int = 10,
    dense_top1: float = 0.9,
    **fields: object,
) -> list[dict]:
    """Rows of one (dataset, arch, allocation, repair) curve given normalised accuracy per seed.

    `r_by_seed[k][i]` is seed k's r at `sparsities[i]`; None leaves that point without a row.
    """
    rows = []
    for seed, values in enumerate(r_by_seed):
        for sparsity, r in zip(sparsities, values, strict=True):
            if r is None:
                continue
            top1 = top1_for(r, num_classes, dense_top1)
            rows.append(
                make_row(
                    sparsity=sparsity,
                    seed=seed,
                    top1=top1,
                    num_classes=num_classes,
                    dense_top1=dense_top1,
                    **fields,
                )
            )
    return rows


def expected_accuracy(accuracy: np.ndarray | float) -> np.ndarray:
    """The accuracy a grid row reaches on average over eval sets, given its score threshold a:
    P(u + IMAGE_NOISE · e < a) = ∫₀¹ Φ((a − u) / σ) du = G(a) − G(a − 1) with
    G(t) = t Φ(t / σ) + σ φ(t / σ). The truth a test of the bootstrap compares its intervals with.
    """
    a, sigma = np.asarray(accuracy, float), IMAGE_NOISE

    def antiderivative(t: np.ndarray) -> np.ndarray:
        z = t / sigma
        cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
        return t * cdf + sigma * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    return antiderivative(a) - antiderivative(a - 1.0)


@dataclass(frozen=True)
class SyntheticGrid:
    """A seeded grid of logistic recovery curves: each repair holds on to a later sparsity.

    Every replicate (dense checkpoint) has its own dense top-1 and shifts each curve's midpoint by
    N(0, replicate_spread) sparsity; each calibration seed adds N(0, noise) to r; the images add
    their own sampling noise (module docstring)."""

    datasets: tuple[str, ...] = ("cifar10", "cifar100", "imagenette")
    archs: tuple[str, ...] = ("resnet18", "resnet50")
    allocations: tuple[str, ...] = ("erk", "lamp")
    sparsities: tuple[float, ...] = tuple(round(0.9 + 0.005 * i, 3) for i in range(12))
    repairs: tuple[Repair, ...] = ("none", "bn_recal", "layer_var", "channel_var_shrink")
    seeds: int = 3
    noise: float = 0.03
    error_rate: float = 0.0
    random_seed: int = 0
    replicates: int = 1
    replicate_spread: float = 0.003
    eval_size: int = EVAL_SIZE

    def rows_per_partition(self) -> int:
        per_point = sum(1 if repair == "none" else self.seeds for repair in self.repairs)
        return self.replicates * len(self.allocations) * len(self.sparsities) * per_point

    def rows_count(self) -> int:
        return len(self.datasets) * len(self.archs) * self.rows_per_partition()

    def midpoint(self, dataset: str, arch: str, allocation: str, repair: Repair) -> float:
        """Sparsity where r = 0.5: repairs in grid order push it later, LAMP/ERK trade places."""
        lo, hi = self.sparsities[0], self.sparsities[-1]
        rank = self.repairs.index(repair) / max(1, len(self.repairs) - 1)
        offset = (sum(map(ord, dataset + arch)) % 7) / 7 * 0.01
        shift = {"erk": 0.004, "lamp": -0.004}.get(allocation, 0.0) * (1 - 2 * rank)
        return lo + (hi - lo) * (0.1 + 0.9 * rank) + offset + shift

    def partition_rows(self, dataset: str, arch: str) -> Iterator[dict]:
        """All rows of one (dataset, arch) partition, deterministic in the grid's random seed."""
        rng = np.random.default_rng([self.random_seed, sum(map(ord, dataset + arch))])
        width = (self.sparsities[-1] - self.sparsities[0]) / 12
        num_classes, base_dense = NUM_CLASSES.get(dataset, 10), DENSE_TOP1.get(dataset, 0.9)
        chance, order = 1.0 / num_classes, 0
        for replicate in range(self.replicates):
            dense = base_dense + (0.01 * rng.standard_normal() if replicate else 0.0)
            for allocation in self.allocations:
                for repair in self.repairs:
                    mid = self.midpoint(dataset, arch, allocation, repair)
                    mid += self.replicate_spread * rng.standard_normal() if replicate else 0.0
                    method, params = (repair, {}) if isinstance(repair, str) else repair
                    seeds = range(1) if method == "none" else range(self.seeds)
                    for sparsity in self.sparsities:
                        mean_r = 0.95 / (1.0 + math.exp((sparsity - mid) / width))
                        noise = rng.normal(0.0, self.noise, (2, len(seeds)))
                        fails = rng.random(len(seeds)) < self.error_rate
                        for seed in seeds:
                            r = min(1.0, max(-0.1, mean_r + noise[0, seed]))
                            # Agreement tracks r, bent and noisy: labels would still tell more.
                            agreement = chance + (1 - chance) * max(r, 0.0) ** 0.8
                            order += 1
                            fields = dict(
                                dataset=dataset,
                                arch=arch,
                                allocation=allocation,
                                sparsity=sparsity,
                                repair=method,
                                params=params,
                                seed=seed,
                                replicate=replicate,
                                eval_size=self.eval_size,
                                dense_top1=dense,
                                agreement=min(1.0, max(0.0, agreement + noise[1, seed])),
                                status=STATUS_ERROR if fails[seed] else STATUS_OK,
                                order=order,
                            )
                            yield grid_row(top1_for(r, num_classes, dense), **fields)

    def write(self, root: Path | str, rows_per_file: int = 250_000) -> int:
        """Write the grid as a store (one file per partition chunk); returns the row count."""
        store, written = ResultStore(root), 0
        for dataset in self.datasets:
            for arch in self.archs:
                chunk: list[dict] = []
                for row in self.partition_rows(dataset, arch):
                    chunk.append(row)
                    if len(chunk) == rows_per_file:
                        written += len(chunk)
                        store.write_many(chunk)
                        chunk = []
                if chunk:
                    written += len(chunk)
                    store.write_many(chunk)
        return written


# --- stores that are not clean: what a full disk, a stray file or an old version leaves --------

DAMAGE_KINDS = ("truncated", "not_parquet", "foreign_schema")


def damage(root: Path | str, kind: str) -> Path:
    """Add one bad `*.parquet` file of `kind` to a store's first partition; returns its path.

    truncated: the first half of one of the store's own files (a write cut off by a full disk);
    not_parquet: random bytes; foreign_schema: a valid Parquet file of someone else's columns.
    """
    store = ResultStore(root)
    source = store.files()[0]
    path = source.parent / f"{kind}.parquet"
    if kind == "truncated":
        data = source.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_parquet":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "foreign_schema":
        pq.write_table(pa.table({"image": ["a.png"], "label": [3]}), path)
    else:
        raise ValueError(f"unknown damage {kind!r}; expected one of {DAMAGE_KINDS}")
    return path


def write_key_schema_1(root: Path | str, rows: Sequence[dict]) -> Path:
    """A store as prune-sweep wrote it before trial-key schema 2: without the columns it added."""
    written = ResultStore(root).write_many(rows)
    for path in written:
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(list(KEY_SCHEMA_2_COLUMNS)), path)
    return Path(root)


# Per-image results that do not fit their rows (`broken_dense`), each refused in one line.
DENSE_KINDS = ("dense_missing", "dense_differs", "dense_count", "dense_length")


def broken_dense(rows: Sequence[dict], kind: str) -> list[dict]:
    """`rows` with their dense_correct damaged: dense_missing (none, though `correct` is there:
    a row written before the column), dense_differs (the first row's bits shifted by one image:
    one checkpoint, two dense results), dense_count (every row's dense model wrong on two more
    images than its dense_top1 says) or dense_length (a byte short)."""
    out = []
    for i, row in enumerate(rows):
        bits = row["dense_correct"]
        if bits is None:
            out.append(dict(row))
            continue
        dense = np.unpackbits(np.frombuffer(bits, np.uint8), count=row["eval_size"]).astype(bool)
        if kind == "dense_missing":
            bits = None
        elif kind == "dense_differs" and i == 0:
            bits = pack(np.roll(dense, 1))
        elif kind == "dense_count":
            dense[np.flatnonzero(dense)[:2]] = False
            bits = pack(dense)
        elif kind == "dense_length":
            bits = bits[:-1]
        elif kind not in DENSE_KINDS:
            raise ValueError(f"unknown dense damage {kind!r}; expected one of {DENSE_KINDS}")
        out.append({**row, "dense_correct": bits})
    return out


def unusable_store(parent: Path, kind: str, rows: Sequence[dict]) -> Path:
    """A store the analysis must refuse, of one kind: missing, empty, foreign (another schema),
    only_errors (`rows` as error rows), key_schema_1 (`rows` in the old schema) or one of
    DENSE_KINDS (`rows` with per-image results that do not fit them, `broken_dense`)."""
    root = Path(parent) / kind
    if kind in ("empty", "foreign"):
        root.mkdir()
    if kind == "foreign":
        pq.write_table(pa.table({"x": [1, 2]}), root / "part.parquet")
    elif kind == "only_errors":
        failure = {"status": STATUS_ERROR, "error": "RuntimeError: synthetic failure", "top1": None}
        errors = [{**row, **failure} for row in rows]
        ResultStore(root).write_many(errors)
    elif kind == "key_schema_1":
        write_key_schema_1(root, rows)
    elif kind in DENSE_KINDS:
        ResultStore(root).write_many(broken_dense(rows, kind))
    return root
