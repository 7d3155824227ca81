"""Everything a sweep checks before Ray starts: names, data, checkpoints, what is already done.

A typo in a grid, a missing dataset or a missing checkpoint is reported in one message within
seconds, not after an hour on a cluster; nothing is written.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sweep.catalog.allocations import ALLOCATIONS
from sweep.catalog.datasets import DATASETS
from sweep.core import paths
from sweep.core.errors import CheckpointError, UserError
from sweep.plan.cells import group_cells
from sweep.plan.grid import Digests, Grid, checkpoints_needed, expand
from sweep.plan.identity import TrialConfig
from sweep.results.legacy import legacy_finished_keys
from sweep.results.store import ResultStore
from sweep.tasks import data, models, prune
from sweep.tasks.allocations import allocate_counts
from sweep.tasks.datasets.holdout import Holdout

SplitReader = Callable[[str], Holdout]


@dataclass
class Plan:
    """What a launch would do: every trial, which are done, and what is missing."""

    grid: Grid
    trials: list[TrialConfig]
    done_keys: set[str]
    missing_data: list[str] = field(default_factory=list)
    missing_checkpoints: list[tuple[str, str, int]] = field(default_factory=list)
    bad_checkpoints: list[str] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)
    legacy_files: int = 0
    data_root: Path | None = None
    checkpoint_dir: Path = paths.CHECKPOINTS
    digests: Digests = field(default_factory=dict)
    eval_precision: str = "fp32"

    @functools.cached_property
    def todo(self) -> list[TrialConfig]:
        return [
            t for t in self.trials if t.checkpoint_sha256 is None or t.key not in self.done_keys
        ]

    @property
    def done(self) -> int:
        return len(self.trials) - len(self.todo)

    def problems(self, pretrain: bool) -> list[str]:
        """Blocking problems; missing checkpoints are fine when they will be trained first."""
        found = [
            f"data for {name!r} is missing: {data.missing_data_message(name, self.data_root)}"
            for name in self.missing_data
        ]
        found += self.bad_checkpoints
        found += self.damaged_files
        if not pretrain:
            found += [
                f"no checkpoint for {dataset}/{arch} replicate {replicate} (train it with "
                f"`python -m sweep.pretrain --dataset {dataset} --arch {arch} --seed {replicate}` "
                "or launch with --pretrain auto)"
                for dataset, arch, replicate in self.missing_checkpoints
            ]
        return found

    def summary(self) -> dict[str, Any]:
        per_pair = Counter((t.dataset, t.arch) for t in self.trials)
        todo_pair = Counter((t.dataset, t.arch) for t in self.todo)
        return {
            "grid": self.grid.name,
            "trials": len(self.trials),
            "cells": len(group_cells(self.trials)),
            "done": self.done,
            "todo": len(self.todo),
            "missing": {
                "data": list(self.missing_data),
                "checkpoints": [f"{d}/{a} seed {r}" for d, a, r in self.missing_checkpoints],
                "bad_checkpoints": list(self.bad_checkpoints),
                "damaged_store_files": list(self.damaged_files),
            },
            "legacy_store_files": self.legacy_files,
            "pairs": [
                {"dataset": d, "arch": a, "trials": n, "todo": todo_pair[(d, a)]}
                for (d, a), n in per_pair.items()
            ],
        }


def make_plan(
    grid: Grid,
    store: ResultStore,
    checkpoint_dir: Path,
    data_root: Path | None,
    eval_precision: str = "fp32",
) -> Plan:
    """Resolve data, verify checkpoints, read finished keys; reads files, writes nothing.

    Checkpoints are hashed and opened here, so a truncated or foreign file stops the launch in a
    second instead of failing every trial on the cluster. Rows of an older key schema count as
    done under today's keys (the launcher upgrades them before it writes).
    """
    missing_data = [name for name in grid.datasets if data.find_data(name, data_root) is None]
    splits = _split_reader(data_root)
    present = [name for name in grid.datasets if name not in missing_data]
    problems = _replicate_problems(grid) + _reach_problems(grid)
    problems += _calibration_problems(grid, present, splits)
    if problems:
        raise UserError(f"cannot run grid {grid.name!r}: " + "; ".join(problems))
    digests, missing, bad = _verify_checkpoints(
        grid, checkpoints_needed(grid), checkpoint_dir, splits, missing_data
    )
    damaged, legacy, done = _store_state(store)
    return Plan(
        grid=grid,
        trials=expand(grid, digests, eval_precision),
        done_keys=done,
        missing_data=missing_data,
        missing_checkpoints=missing,
        bad_checkpoints=bad,
        damaged_files=damaged,
        legacy_files=legacy,
        data_root=data_root,
        checkpoint_dir=checkpoint_dir,
        digests=digests,
        eval_precision=eval_precision,
    )


def add_trained_checkpoints(plan: Plan) -> Plan:
    """`plan` once its missing checkpoints are trained: only those files are verified, and the
    trials that needed them get their checkpoint digest (hence their keys)."""
    digests, missing, bad = _verify_checkpoints(
        plan.grid, plan.missing_checkpoints, plan.checkpoint_dir, _split_reader(plan.data_root), []
    )
    problems = bad + [f"training did not write {d}/{a} replicate {r}" for d, a, r in missing]
    if problems:
        raise UserError(f"cannot run grid {plan.grid.name!r}: " + "; ".join(problems))
    digests = {**plan.digests, **digests}
    return dataclasses.replace(
        plan,
        trials=expand(plan.grid, digests, plan.eval_precision),
        missing_checkpoints=[],
        digests=digests,
    )


def _verify_checkpoints(
    grid: Grid,
    needed: list[tuple[str, str, int]],
    checkpoint_dir: Path,
    splits: SplitReader,
    missing_data: list[str],
) -> tuple[Digests, list[tuple[str, str, int]], list[str]]:
    """(digest per present checkpoint, the missing ones, problems of bad ones): each file hashed,
    opened and, for val-split grids, checked to hold out this copy's validation split."""
    digests: Digests = {}
    missing, bad = [], []
    for dataset, arch, replicate in needed:
        path = paths.checkpoint_file(checkpoint_dir, dataset, arch, replicate)
        if not path.exists():
            missing.append((dataset, arch, replicate))
            continue
        try:
            meta = models.verify_checkpoint(path, dataset, arch, replicate)
            if grid.eval_split == "val" and dataset not in missing_data:
                _check_held_out(path, meta, splits(dataset).digest)
            digests[(dataset, arch, replicate)] = meta.sha256
        except CheckpointError as error:
            bad.append(str(error))
    return digests, missing, bad


def _split_reader(data_root: Path | None) -> SplitReader:
    """The validation split of a dataset found under `data_root`, each opened once: opening a
    train split is I/O."""
    return functools.cache(lambda name: data.validation_split(name, data_root))


def _replicate_problems(grid: Grid) -> list[str]:
    """Replicates that cannot seed a checkpoint's training, hence cannot name its file."""
    problems = []
    for replicate in grid.replicates:
        try:
            models.check_seed(replicate)
        except UserError as error:
            problems.append(f"replicate {replicate!r} cannot name a checkpoint: {error}")
    return problems


def _reach_problems(grid: Grid) -> list[str]:
    """Sparsities an allocation cannot reach for an architecture, told from layer shapes once
    per (dataset, arch) instead of failing every such trial on the cluster."""
    allocations = [name for name in grid.allocations if ALLOCATIONS[name].from_shapes]
    problems = []
    for dataset, arch in grid.pairs if allocations else ():
        weights = _shape_weights(dataset, arch)
        for allocation in allocations:
            refused = _refused(allocation, weights, grid.sparsities)
            if refused:
                lowest, *higher = refused
                also = f"; also refused: {', '.join(map(repr, higher))}" if higher else ""
                problems.append(f"{dataset} × {arch}: {refused[lowest]}{also}")
    return problems


def _shape_weights(dataset: str, arch: str) -> list[torch.Tensor]:
    """The prunable weights of `arch` for `dataset`, on the meta device: shapes, no values."""
    info = DATASETS[dataset]
    with torch.device("meta"):
        model = models.build_model(arch, info.num_classes, info.in_channels, info.image_size)
    return [module.weight for _, module in prune.prunable_layers(model)]


def _refused(
    allocation: str, weights: Sequence[torch.Tensor], sparsities: Sequence[float]
) -> dict[float, UserError]:
    """The allocation's refusal of each sparsity it cannot reach, lowest sparsity first."""
    refused = {}
    for sparsity in sorted(sparsities):
        try:
            allocate_counts(allocation, weights, sparsity)
        except UserError as error:
            refused[sparsity] = error
    return refused


def _calibration_problems(grid: Grid, present: list[str], splits: SplitReader) -> list[str]:
    """A calib_size larger than a dataset's calibration pool (its train split minus the
    validation split), for the datasets found: it would fail every retry of every trial."""
    if not any(repair.uses_calibration for repair in grid.repairs):
        return []
    problems = []
    for name in present:
        pool = len(splits(name).train)
        if grid.calib_size > pool:
            problems.append(
                f"calib_size {grid.calib_size} exceeds the {pool} train images of {name} "
                f"outside its validation split; expected at most {pool}"
            )
    return problems


def _store_state(store: ResultStore) -> tuple[list[str], int, set[str]]:
    """(damaged-file problems, older-schema file count, finished keys) from one survey of the store;
    older rows count as done under today's keys."""
    if not store.root.is_dir():
        return [], 0, set()
    files = store.survey()
    damaged = [
        f"store file {path} is damaged ({reason}); move it out of the store and rerun"
        for path, reason in files.damaged
    ]
    if damaged:
        return damaged, 0, set()
    done = store.finished_keys(files)
    if files.legacy:
        done |= legacy_finished_keys(store, files.legacy)
    return damaged, len(files.legacy), done


def refresh_store(plan: Plan, store: ResultStore) -> Plan:
    """`plan` with the store read again (after taking its lock, moving it aside or upgrading
    it); checkpoints and data are not checked a second time, only the store's files are."""
    damaged, legacy, done = _store_state(store)
    if damaged:
        raise UserError(f"cannot run grid {plan.grid.name!r}: " + "; ".join(damaged))
    return dataclasses.replace(plan, done_keys=done, damaged_files=damaged, legacy_files=legacy)


def _check_held_out(path: Path, meta: models.CheckpointMeta, digest: str) -> None:
    """A checkpoint evaluated on the validation split must have held out exactly that split."""
    trained = (meta.held_out or {}).get("sha256")
    if trained != digest:
        raise CheckpointError(
            f"checkpoint {path} held out another validation split ({str(trained)[:12]}) than the "
            f"data found here ({digest[:12]}): it may have trained on the images it would be "
            "evaluated on; retrain it on this copy of the data"
        )


def require_runnable(plan: Plan, pretrain: bool) -> None:
    problems = plan.problems(pretrain)
    if problems:
        raise UserError(f"cannot run grid {plan.grid.name!r}: " + "; ".join(problems))
