"""Stores of known truth: how often the analysis's intervals cover it, and how often it names a
LAMP − ERK winner where there is none.

Why in the product: the intervals (intervals.py) claim a coverage; this module is the evidence,
run by the tests (tests/test_bootstrap_coverage.py, 3 replicates) and by `bench/coverage.py` /
`python -m analysis.simulate` (the README's table). Every simulated row is built by
`sweep.results.rows.build_row` from a `TrialConfig`, written by `ResultStore.write_many`, read back
by `analysis.loading.load_results` and analysed by `analysis.regimes.regime_table`: the code a user
runs, nothing reimplemented.

One *study* is one (dataset, arch) pair: LAMP and ERK, repair bn_recal, `replicates` dense
checkpoints × `seeds` calibration draws, at 12 sparsities, all rows evaluated on one eval set
of `eval_size` images. A batch of studies is written as one store (one pair each; the analysis
treats pairs independently and its resampling weights depend only on sizes and seed, so a pair's
intervals are the ones it would have alone), and every batch is analysed with its own seed.

The truth. At each sparsity both allocations have the same true normalised accuracy r*
(`Design.true_r`): the true LAMP − ERK difference is 0. A row's r is r* plus effects in top-1
units divided by (dense − chance): a dense checkpoint's effect (sd `replicate_sd`, a fraction
`arm_share` of its variance shared by the two allocations, the rest each allocation's own), and a
calibration draw's (sd `seed_sd`); each checkpoint's dense top-1 is `dense_top1` + N(0,
`dense_sd`); effects are drawn afresh at each sparsity, so every point is an independent trial of
its interval (a harsh case for boundaries: a real checkpoint shifts its whole curve, here every
point moves on its own, so curves are jagged and each point's interval varies on its own). A
row is right on image i where its latent score falls below Φ⁻¹(its top-1):

    score = √w_img·a_i + √w_arm·g_(allocation,sparsity),i + √w_ckpt·h_checkpoint,i
            + √w_ckpt_arm·x_(checkpoint,allocation,sparsity),i + √w_row·e_row,i

with every term standard normal and the weights summing to 1, so over the population of images a
row's accuracy is its top-1 exactly, and the truth is known; the dense model scores √w_img·a_i +
√w_ckpt·h_checkpoint,i + √(1 − w_img − w_ckpt)·e_dense,i. The eval set is a fresh sample of images
per study: image difficulty a_i is shared by every row and the dense model, an allocation's image
preferences g by all its checkpoints, a checkpoint's h by its rows and its dense model, as in a
real store. Counted: the interval of mean r of each arm at each sparsity (truth r*), of LAMP − ERK
in r (truth 0), of the boundary at `tau` (truth: where the piecewise-linear curve through r*
crosses it), and the cells naming a LAMP − ERK winner (false: the truth is 0).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import NormalDist

import numpy as np

from analysis.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
from analysis.intervals import check_confidence
from analysis.loading import load_results
from analysis.regimes import regime_table
from sweep.core.arguments import ArgumentParser
from sweep.core.errors import UserError, cli_main
from sweep.plan.identity import TrialConfig
from sweep.results.rows import MEASUREMENT_COLUMNS, build_row
from sweep.results.store import ResultStore

DATASET, REPAIR, ALLOCATIONS = "simulated", "bn_recal", ("erk", "lamp")
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
# Latent-score weights of the image terms (module docstring); they sum to 1.
IMAGE_WEIGHTS = {
    "image": 0.55,
    "arm": 0.10,
    "checkpoint": 0.15,
    "checkpoint_arm": 0.05,
    "row": 0.15,
}


@dataclass(frozen=True)
class Setting:
    """How much the dense checkpoints, the calibration draws and the dense top-1 vary (top-1)."""

    name: str
    replicate_sd: float
    seed_sd: float
    dense_sd: float


SETTINGS = {
    # Dense checkpoints dominate: sd 0.05 of an arm's top-1 between checkpoints.
    "replicate": Setting("replicate", replicate_sd=0.05, seed_sd=0.005, dense_sd=0.01),
    # Eval-image noise dominates: sd 0.002 between checkpoints.
    "image": Setting("image", replicate_sd=0.002, seed_sd=0.001, dense_sd=0.002),
}


@dataclass(frozen=True)
class Design:
    """One study's grid (module docstring)."""

    replicates: int = 3
    seeds: int = 2
    eval_size: int = 2000
    sparsities: tuple[float, ...] = tuple(round(0.4 + 0.05 * i, 2) for i in range(12))
    true_r: tuple[float, ...] = tuple(round(0.97 - 0.06 * i, 2) for i in range(12))
    num_classes: int = 10
    dense_top1: float = 0.9
    arm_share: float = 0.5
    tau: float = 0.8

    @property
    def chance(self) -> float:
        return 1.0 / self.num_classes

    def true_boundary(self) -> float:
        """Where the piecewise-linear curve through true_r first falls below tau."""
        s, r = self.sparsities, self.true_r
        for i in range(1, len(s)):
            if r[i] < self.tau <= r[i - 1]:
                return s[i - 1] + (r[i - 1] - self.tau) / (r[i - 1] - r[i]) * (s[i] - s[i - 1])
        raise ValueError("the true curve does not cross tau inside the grid")


@dataclass
class Counts:
    """Intervals counted and how many covered the truth; winners named where there are none."""

    difference: int = 0
    difference_covered: int = 0
    false_winners: int = 0
    mean: int = 0
    mean_covered: int = 0
    boundary: int = 0
    boundary_covered: int = 0
    at_chance: int = 0
    studies: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def rates(self) -> dict[str, float]:
        def rate(hits: int, total: int) -> float:
            return hits / total if total else math.nan

        return {
            "difference_coverage": rate(self.difference_covered, self.difference),
            "false_winner_rate": rate(self.false_winners, self.difference),
            "mean_coverage": rate(self.mean_covered, self.mean),
            "boundary_coverage": rate(self.boundary_covered, self.boundary),
        }


@dataclass
class Result:
    setting: str
    design: Design
    confidence: float
    counts: Counts = field(default_factory=Counts)
    seconds: float = 0.0

    def summary(self) -> dict:
        rates = self.counts.rates()
        return {
            "setting": self.setting,
            "replicates": self.design.replicates,
            "seeds": self.design.seeds,
            "eval_size": self.design.eval_size,
            "confidence": self.confidence,
            "studies": self.counts.studies,
            "difference_intervals": self.counts.difference,
            **{name: round(value, 4) for name, value in rates.items()},
            # Binomial standard error of a rate near the nominal level, over the points counted.
            "binomial_se": round(
                math.sqrt(self.confidence * (1 - self.confidence) / max(self.counts.difference, 1)),
                4,
            ),
            "seconds": round(self.seconds, 1),
        }


def _probit(p: float) -> float:
    return NormalDist().inv_cdf(min(max(float(p), 1e-9), 1 - 1e-9))


def _pack(correct: np.ndarray) -> bytes:
    return np.packbits(correct.astype(np.uint8)).tobytes()


def _measurements(**values: object) -> dict:
    """Only the columns build_row takes as measurements (the others come from the config)."""
    return {name: value for name, value in values.items() if name in MEASUREMENT_COLUMNS}


def study_rows(setting: Setting, design: Design, study: int, seed: int = 0) -> list[dict]:
    """The store rows of one study (module docstring), deterministic in (setting, design, study,
    seed); the pair is (DATASET, study{study})."""
    rng = np.random.default_rng(
        [seed, list(SETTINGS).index(setting.name), design.replicates, study]
    )
    w = IMAGE_WEIGHTS
    n, chance, span = design.eval_size, design.chance, design.dense_top1 - design.chance
    arch = f"study{study:05d}"
    image = rng.standard_normal(n)
    arms = {(alloc, s): rng.standard_normal(n) for alloc in ALLOCATIONS for s in design.sparsities}
    rows, order = [], 0
    for replicate in range(design.replicates):
        checkpoint = rng.standard_normal(n)
        dense_top1_true = design.dense_top1 + setting.dense_sd * rng.standard_normal()
        dense_score = (
            math.sqrt(w["image"]) * image
            + math.sqrt(w["checkpoint"]) * checkpoint
            + math.sqrt(1 - w["image"] - w["checkpoint"]) * rng.standard_normal(n)
        )
        dense_correct = dense_score < _probit(dense_top1_true)
        dense_top1, dense_bits = float(dense_correct.mean()), _pack(dense_correct)
        sha = f"{study:08x}{replicate:08x}".ljust(64, "0")
        shared_part = math.sqrt(w["image"]) * image + math.sqrt(w["checkpoint"]) * checkpoint
        for s, true_r in zip(design.sparsities, design.true_r, strict=True):
            shared = rng.normal(0.0, setting.replicate_sd * math.sqrt(design.arm_share))
            for allocation in ALLOCATIONS:
                own = rng.normal(0.0, setting.replicate_sd * math.sqrt(1 - design.arm_share))
                arm_part = (
                    shared_part
                    + math.sqrt(w["arm"]) * arms[(allocation, s)]
                    + math.sqrt(w["checkpoint_arm"]) * rng.standard_normal(n)
                )
                effects = shared + own + rng.normal(0.0, setting.seed_sd, design.seeds)
                noise = math.sqrt(w["row"]) * rng.standard_normal((design.seeds, n))
                for calibration in range(design.seeds):
                    r = true_r + effects[calibration] / span
                    top1_true = chance + r * (dense_top1_true - chance)
                    correct = arm_part + noise[calibration] < _probit(top1_true)
                    config = TrialConfig(
                        dataset=DATASET,
                        arch=arch,
                        allocation=allocation,
                        sparsity=s,
                        repair=REPAIR,
                        repair_params={},
                        seed=calibration,
                        calib_size=256,
                        eval_limit=n,
                        checkpoint_sha256=sha,
                        replicate=replicate,
                    )
                    order += 1
                    measurements = _measurements(
                        num_classes=design.num_classes,
                        achieved_sparsity=s,
                        eval_size=n,
                        eval_precision="fp32",
                        dense_top1=dense_top1,
                        top1=float(correct.mean()),
                        correct=_pack(correct),
                        dense_correct=dense_bits,
                        agreement=float((correct == dense_correct).mean()),
                        device="cpu",
                    )
                    rows.append(
                        build_row(
                            config,
                            measurements,
                            grid="simulated",
                            attempts=1,
                            finished_at=_EPOCH + timedelta(seconds=order),
                        )
                    )
    return rows


def count_batch(tables, design: Design) -> Counts:
    """Intervals of one analysed batch against the truth (module docstring)."""
    counts = Counts(studies=len(tables.summary.drop_duplicates(["dataset", "arch"])))
    comparison = tables.comparison
    counts.difference = len(comparison)
    counts.difference_covered = int(
        ((comparison["diff_lo"] <= 0) & (comparison["diff_hi"] >= 0)).sum()
    )
    counts.false_winners = int(comparison["winner"].isin(ALLOCATIONS).sum())
    truth = dict(zip(design.sparsities, design.true_r, strict=True))
    curves = tables.curves
    true_r = curves["sparsity"].map(lambda s: truth[round(s, 6)])
    counts.mean = len(curves)
    counts.mean_covered = int(((curves["r_lo"] <= true_r) & (true_r <= curves["r_hi"])).sum())
    counts.at_chance = int(curves["at_chance"].fillna(False).astype(bool).sum())
    boundary = design.true_boundary()
    own = tables.boundaries[tables.boundaries["tau"] == design.tau]
    counts.boundary = len(own)
    counts.boundary_covered = int(((own["ci_lo"] <= boundary) & (boundary <= own["ci_hi"])).sum())
    return counts


def run_setting(
    setting: Setting,
    design: Design,
    studies: int,
    *,
    batch: int = 50,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    workdir: Path | None = None,
) -> Result:
    """Simulate `studies` studies in batches (one store each), analyse each store as the CLI
    does, and count (module docstring)."""
    confidence = check_confidence(confidence)
    result = Result(setting.name, design, confidence)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="simulate-", dir=workdir) as tmp:
        for first in range(0, studies, batch):
            root = Path(tmp) / f"batch{first:06d}"
            rows = [
                row
                for study in range(first, min(first + batch, studies))
                for row in study_rows(setting, design, study, seed)
            ]
            ResultStore(root).write_many(rows)
            frame = load_results(root).frame
            tables = regime_table(
                frame,
                design.tau,
                resamples=resamples,
                confidence=confidence,
                seed=seed * 1_000_003 + first,
            )
            result.counts.add(count_batch(tables, design))
    result.seconds = time.perf_counter() - start
    return result


def format_table(results: Sequence[Result]) -> str:
    header = (
        f"{'setting':<10} {'replicates':>10} {'studies':>8} {'diff cover':>10} "
        f"{'false win':>10} {'mean cover':>10} {'bound cover':>11} {'seconds':>8}"
    )
    lines = [header]
    for result in results:
        s = result.summary()
        lines.append(
            f"{s['setting']:<10} {s['replicates']:>10} {s['studies']:>8} "
            f"{s['difference_coverage']:>10.3f} {s['false_winner_rate']:>10.3f} "
            f"{s['mean_coverage']:>10.3f} {s['boundary_coverage']:>11.3f} {s['seconds']:>8.1f}"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m analysis.simulate",
        description=(
            "Write result stores of known truth through the real store writer, analyse them as "
            "python -m analysis.regimes does, and print the coverage of the nominal intervals "
            "(LAMP - ERK in r, whose truth is 0; mean r of each arm; the boundary at tau) and "
            "the rate of LAMP - ERK winners named where there is none, per setting "
            "(replicate: dense checkpoints dominate, sd 0.05 of top-1; image: eval-image noise "
            "dominates, sd 0.002 between checkpoints) and replicate count. The last line is JSON."
        ),
    )
    parser.add_argument(
        "--replicates", type=int, nargs="+", default=[2, 3, 5, 10], help="dense checkpoints"
    )
    parser.add_argument(
        "--settings", nargs="+", choices=sorted(SETTINGS), default=["replicate", "image"]
    )
    parser.add_argument("--stores", type=int, default=200, help="studies per (setting, replicates)")
    parser.add_argument("--seeds", type=int, default=2, help="calibration draws per replicate")
    parser.add_argument("--eval-size", type=int, default=2000, help="eval images per study")
    parser.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE)
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    parser.add_argument("--batch", type=int, default=50, help="studies per store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs", type=int, default=1, help="processes, one (setting, replicates) cell each"
    )
    return parser


def run_cells(
    cells: Sequence[tuple[Setting, Design]], studies: int, jobs: int = 1, **options: object
) -> list[Result]:
    """run_setting for every (setting, design) cell, in `jobs` processes (spawned: a fresh
    interpreter each, nothing inherited from the caller's threads)."""
    if jobs <= 1 or len(cells) <= 1:
        return [run_setting(setting, design, studies, **options) for setting, design in cells]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(cells)), mp_context=context) as pool:
        futures = [
            pool.submit(run_setting, setting, design, studies, **options)
            for setting, design in cells
        ]
        return [future.result() for future in futures]


def run(args: argparse.Namespace) -> None:
    confidence = check_confidence(args.confidence)
    for name, value, least in (
        ("--stores", args.stores, 1),
        ("--seeds", args.seeds, 1),
        ("--eval-size", args.eval_size, 8),
        ("--resamples", args.resamples, 50),
        ("--batch", args.batch, 1),
        *(("--replicates", r, 1) for r in args.replicates),
    ):
        if value < least:
            raise UserError(f"{name} {value} is below {least}")
    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs} is below 1")
    cells = [
        (SETTINGS[name], Design(replicates=r, seeds=args.seeds, eval_size=args.eval_size))
        for name in args.settings
        for r in args.replicates
    ]
    options = dict(batch=args.batch, seed=args.seed, confidence=confidence)
    results = run_cells(cells, args.stores, args.jobs, resamples=args.resamples, **options)
    print(format_table(results), end="")
    summary = {
        "settings": {name: asdict(SETTINGS[name]) for name in args.settings},
        "image_weights": IMAGE_WEIGHTS,
        "results": [r.summary() for r in results],
    }
    print(json.dumps(summary))


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
