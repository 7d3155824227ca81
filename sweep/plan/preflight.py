"""Everything a sweep checks before Ray starts: names, data, checkpoints, what is already done.

A typo in a grid, a missing dataset or a missing checkpoint is reported in one message within
seconds, not after an hour on a cluster; nothing is written.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.core.errors import CheckpointError, UserError
from sweep.plan.cells import group_cells
from sweep.plan.grid import Digests, Grid, checkpoints_needed, expand
from sweep.plan.identity import TrialConfig
from sweep.results.store import ResultStore
from sweep.tasks import data, models
from sweep.upgrade import legacy_finished_keys


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
    digests: Digests = {}
    missing, bad = [], []
    held_out: dict[str, str] = {}  # validation-split digest per dataset: opening a split is I/O
    for dataset, arch, replicate in checkpoints_needed(grid):
        path = models.checkpoint_path(checkpoint_dir, dataset, arch, replicate)
        if not path.exists():
            missing.append((dataset, arch, replicate))
            continue
        try:
            meta = models.verify_checkpoint(path, dataset, arch, replicate)
            if grid.eval_split == "val" and dataset not in missing_data:
                if dataset not in held_out:
                    held_out[dataset] = data.validation_split(dataset, data_root).digest
                _check_held_out(path, meta, held_out[dataset])
            digests[(dataset, arch, replicate)] = meta.sha256
        except CheckpointError as error:
            bad.append(str(error))
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
    )


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
    it); checkpoints and data are not checked a second time."""
    damaged, legacy, done = _store_state(store)
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
