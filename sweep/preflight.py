"""Everything a sweep checks before Ray starts: names, data, checkpoints, what is already done.

A typo in a grid, a missing dataset or a missing checkpoint is reported in one message within
seconds, not after an hour on a cluster; nothing is written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.errors import CheckpointError, UserError
from sweep.grid import Grid, TrialConfig, expand
from sweep.store import ResultStore
from sweep.tasks import data, models


@dataclass
class Plan:
    """What a launch would do: every trial, which are done, and what is missing."""

    grid: Grid
    trials: list[TrialConfig]
    done_keys: set[str]
    missing_data: list[str] = field(default_factory=list)
    missing_checkpoints: list[tuple[str, str]] = field(default_factory=list)
    bad_checkpoints: list[str] = field(default_factory=list)
    data_root: Path | None = None

    @property
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
        if not pretrain:
            found += [
                f"no checkpoint for {dataset}/{arch} (train it with `python -m sweep.pretrain "
                f"--dataset {dataset} --arch {arch}` or launch with --pretrain auto)"
                for dataset, arch in self.missing_checkpoints
            ]
        return found

    def _data_messages(self) -> list[tuple[str, str]]:
        return [
            (name, data.missing_data_message(name, self.data_root)) for name in self.missing_data
        ]

    data_root: Path | None = None

    def summary(self) -> dict[str, Any]:
        per_pair = Counter((t.dataset, t.arch) for t in self.trials)
        todo_pair = Counter((t.dataset, t.arch) for t in self.todo)
        return {
            "grid": self.grid.name,
            "trials": len(self.trials),
            "done": self.done,
            "todo": len(self.todo),
            "missing": {
                "data": list(self.missing_data),
                "checkpoints": [f"{d}/{a}" for d, a in self.missing_checkpoints],
                "bad_checkpoints": list(self.bad_checkpoints),
            },
            "pairs": [
                {"dataset": d, "arch": a, "trials": n, "todo": todo_pair[(d, a)]}
                for (d, a), n in per_pair.items()
            ],
        }


def make_plan(grid: Grid, store: ResultStore, checkpoint_dir: Path, data_root: Path | None) -> Plan:
    """Resolve data, checkpoint digests and finished keys; reads files, writes nothing."""
    missing_data = [name for name in grid.datasets if data.find_data(name, data_root) is None]
    digests: dict[tuple[str, str], str | None] = {}
    missing, bad = [], []
    for dataset, arch in grid.pairs:
        path = models.checkpoint_path(checkpoint_dir, dataset, arch)
        if not path.exists():
            missing.append((dataset, arch))
            continue
        try:
            meta = models.read_meta(path)
        except CheckpointError as error:
            bad.append(str(error))
            continue
        if (meta.arch, meta.dataset) != (arch, dataset):
            bad.append(f"checkpoint {path} is for {meta.dataset}/{meta.arch}, not {dataset}/{arch}")
            continue
        digests[(dataset, arch)] = meta.sha256
    return Plan(
        grid=grid,
        trials=expand(grid, digests),
        done_keys=store.finished_keys() if store.root.is_dir() else set(),
        missing_data=missing_data,
        missing_checkpoints=missing,
        bad_checkpoints=bad,
        data_root=data_root,
    )


def require_runnable(plan: Plan, pretrain: bool) -> None:
    problems = plan.problems(pretrain)
    if problems:
        raise UserError(f"cannot run grid {plan.grid.name!r}:\n  - " + "\n  - ".join(problems))
