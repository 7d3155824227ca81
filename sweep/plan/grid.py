"""Named grids and grid files: validation and expansion into trial configs.

A grid is a union of (dataset, arch) pairs crossed with allocations × sparsities × repairs ×
seeds, where the seed axis applies only to repairs that draw a calibration set (`none` has no
randomness and runs once per point). Because of that, and because a resumed sweep runs only the
missing trials, the Tune search space is one `grid_search` over the expanded trial configs rather
than a Cartesian product of axes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sweep.catalog.datasets import EVAL_SPLITS
from sweep.core.errors import UnknownNameError, UserError
from sweep.plan.identity import SPARSITY_DECIMALS, RepairSpec, TrialConfig


@dataclass(frozen=True)
class Grid:
    name: str
    pairs: tuple[tuple[str, str], ...]
    allocations: tuple[str, ...]
    sparsities: tuple[float, ...]
    repairs: tuple[RepairSpec, ...]
    seeds: tuple[int, ...]
    calib_size: int = 1024
    eval_limit: int | None = None
    replicates: tuple[int, ...] = (0,)
    eval_split: str = "test"
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(dataset for dataset, _ in self.pairs))


def sparsity_range(start: float, stop: float, step: float) -> tuple[float, ...]:
    """Inclusive range, rounded so that 0.9 + 11 * 0.005 is exactly 0.955."""
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    return tuple(round(start + i * step, SPARSITY_DECIMALS) for i in range(count))


STUDY_SPARSITIES = sparsity_range(0.90, 0.955, 0.005)
STUDY_REPAIRS = (RepairSpec("none"), RepairSpec("bn_recal"), RepairSpec("channel_var_shrink"))
STUDY_ALLOCATIONS = ("erk", "lamp")
RESNETS = ("resnet18", "resnet34", "resnet50")
PAPER_DATASETS = ("cifar10", "cifar100", "imagenette")

DEMO = Grid(
    name="demo",
    pairs=(("fashion_mnist", "resnet20"),),
    allocations=("erk", "lamp", "global"),
    sparsities=(0.70, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98),
    repairs=STUDY_REPAIRS,
    seeds=(0, 1),
    calib_size=512,
    eval_limit=2000,
    replicates=(0, 1, 2),
    resources={"cpus_per_trial": 1, "gpus_per_trial": 0},
)
PAPER = Grid(
    name="paper",
    pairs=tuple((d, a) for d in PAPER_DATASETS for a in RESNETS),
    allocations=STUDY_ALLOCATIONS,
    sparsities=STUDY_SPARSITIES,
    repairs=STUDY_REPAIRS,
    seeds=(0, 1, 2),
    replicates=(0, 1, 2),
    resources={"cpus_per_trial": 4, "gpus_per_trial": 0.5},
)
VALIDATION = replace(
    PAPER,
    name="validation",
    pairs=tuple(("imagenet100", a) for a in RESNETS)
    + tuple((d, "densenet121") for d in (*PAPER_DATASETS, "imagenet100")),
)
FULL = replace(PAPER, name="full", pairs=PAPER.pairs + VALIDATION.pairs)
# Stronger label-free baselines against the allocation, with and without residual connections:
# sized so that its first run, checkpoints included, fits an hour on 2 CPU cores.
BASELINES = Grid(
    name="baselines",
    pairs=(("fashion_mnist", "resnet20"), ("fashion_mnist", "vgg16_bn_quarter")),
    allocations=("erk", "lamp", "uniform_plus", "global"),
    sparsities=(0.80, 0.85, 0.90, 0.92, 0.94, 0.96, 0.98),
    repairs=(
        *STUDY_REPAIRS,
        RepairSpec("channel_var_shrink", (("points", "logits"),)),
        RepairSpec("channel_var_shrink", (("points", "hidden"),)),
        RepairSpec("obs_reconstruct"),
        RepairSpec("adaprune"),
    ),
    seeds=(0,),
    calib_size=256,
    eval_limit=1000,
    replicates=(0, 1, 2),
    resources={"cpus_per_trial": 1, "gpus_per_trial": 0},
)
NAMED_GRIDS: dict[str, Grid] = {
    grid.name: grid for grid in (DEMO, PAPER, VALIDATION, FULL, BASELINES)
}


Digests = dict[tuple[str, str, int], str | None]


def checkpoints_needed(grid: Grid) -> list[tuple[str, str, int]]:
    """Every dense checkpoint a grid needs: (dataset, arch, replicate)."""
    return [(d, a, r) for d, a in grid.pairs for r in grid.replicates]


def expand(grid: Grid, digests: Digests, eval_precision: str = "fp32") -> list[TrialConfig]:
    """All distinct trial configs of a grid; `digests`: (dataset, arch, replicate) -> sha256;
    `eval_precision`: how the trials will evaluate (fp32, or bf16 where they get GPUs).

    Two spellings of one repair in a grid, or seeds of a method that draws no calibration set,
    canonicalise to the same config and appear once.
    """
    trials: dict[str, TrialConfig] = {}
    for dataset, arch, replicate in checkpoints_needed(grid):
        for allocation in grid.allocations:
            for sparsity in grid.sparsities:
                for repair in grid.repairs:
                    for seed in grid.seeds:
                        trial = TrialConfig(
                            dataset=dataset,
                            arch=arch,
                            allocation=allocation,
                            sparsity=sparsity,
                            repair=repair.method,
                            repair_params=repair.params_dict,
                            seed=seed,
                            calib_size=grid.calib_size,
                            eval_limit=grid.eval_limit,
                            checkpoint_sha256=digests.get((dataset, arch, replicate)),
                            replicate=replicate,
                            eval_split=grid.eval_split,
                            eval_precision=eval_precision,
                        )
                        trials.setdefault(json.dumps(trial.to_dict(), sort_keys=True), trial)
    return list(trials.values())


# --- loading and validation -------------------------------------------------------------------


def load_grid(name_or_path: str) -> Grid:
    """A named grid, or a YAML grid file; validated against every registry."""
    if name_or_path in NAMED_GRIDS:
        grid = NAMED_GRIDS[name_or_path]
    elif name_or_path.endswith((".yaml", ".yml")):
        grid = _grid_from_file(Path(name_or_path))
    else:
        raise UnknownNameError("grid", name_or_path, [*NAMED_GRIDS, "<file>.yaml"])
    validate(grid)
    return grid


_FILE_FIELDS = {
    "name", "datasets", "archs", "pairs", "allocations", "sparsities", "repairs", "seeds",
    "replicates", "calib_size", "eval_limit", "eval_split", "resources",
}  # fmt: skip
_RESOURCE_FIELDS = {"cpus_per_trial", "gpus_per_trial"}


def _grid_from_file(path: Path) -> Grid:
    if not path.is_file():
        raise UserError(f"grid file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(_yaml_error_line(path, error)) from None
    if not isinstance(raw, dict):
        raise UserError(f"grid file {str(path)!r} must hold a mapping of fields")
    unknown = set(raw) - _FILE_FIELDS
    if unknown:
        raise UserError(
            f"grid file {str(path)!r}: unknown field(s) {sorted(unknown)}; "
            f"allowed: {', '.join(sorted(_FILE_FIELDS))}"
        )
    if "pairs" in raw:
        pairs = tuple(_pair(p, path) for p in _list(raw, "pairs", path))
    else:
        datasets, archs = _list(raw, "datasets", path), _list(raw, "archs", path)
        pairs = tuple((str(d), str(a)) for d in datasets for a in archs)
    resources = raw.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - _RESOURCE_FIELDS:
        raise UserError(
            f"grid file {str(path)!r}: resources must be a mapping with keys "
            f"{', '.join(sorted(_RESOURCE_FIELDS))}; got {resources!r}"
        )
    return Grid(
        name=str(raw.get("name", path.stem)),
        pairs=pairs,
        allocations=tuple(str(a) for a in _list(raw, "allocations", path)),
        sparsities=_sparsities(raw.get("sparsities"), path),
        repairs=tuple(_repair(r, path) for r in _list(raw, "repairs", path)),
        seeds=tuple(_int(s, "seeds", path) for s in raw.get("seeds", [0])),
        replicates=tuple(_int(r, "replicates", path) for r in _list(raw, "replicates", path))
        if "replicates" in raw
        else (0,),
        eval_split=str(raw.get("eval_split", "test")),
        calib_size=_int(raw.get("calib_size", 1024), "calib_size", path),
        eval_limit=None
        if raw.get("eval_limit") is None
        else _int(raw["eval_limit"], "eval_limit", path),
        resources={k: float(v) for k, v in resources.items()},
    )


def _yaml_error_line(path: Path, error: yaml.YAMLError) -> str:
    """The parser's complaint as one line: file, line and column, what was expected."""
    mark = getattr(error, "problem_mark", None)
    where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    detail = f"{context}: {problem}" if context else problem
    return f"grid file {str(path)!r}{where} is not valid YAML: {' '.join(detail.split())}"


def _list(raw: dict, key: str, path: Path) -> list:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise UserError(f"grid file {str(path)!r}: {key!r} must be a non-empty list; got {value!r}")
    return value


def _pair(value: Any, path: Path) -> tuple[str, str]:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise UserError(f"grid file {str(path)!r}: a pair is [dataset, arch]; got {value!r}")
    return str(value[0]), str(value[1])


def _int(value: Any, key: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"grid file {str(path)!r}: {key} must be an integer; got {value!r}")
    return value


def _sparsities(value: Any, path: Path) -> tuple[float, ...]:
    if isinstance(value, dict) and set(value) == {"start", "stop", "step"}:
        return sparsity_range(float(value["start"]), float(value["stop"]), float(value["step"]))
    if isinstance(value, list) and value and all(isinstance(s, int | float) for s in value):
        return tuple(round(float(s), SPARSITY_DECIMALS) for s in value)
    raise UserError(
        f"grid file {str(path)!r}: sparsities must be a list of numbers or "
        f"{{start, stop, step}}; got {value!r}"
    )


def _repair(value: Any, path: Path) -> RepairSpec:
    if isinstance(value, str):
        return RepairSpec(value)
    if isinstance(value, dict) and "method" in value and set(value) <= {"method", "params"}:
        params = value.get("params") or {}
        if isinstance(params, dict):
            return RepairSpec(str(value["method"]), tuple(sorted(params.items())))
    raise UserError(
        f"grid file {str(path)!r}: a repair is a method name or {{method, params}}; got {value!r}"
    )


def validate(grid: Grid) -> None:
    """Check every name and value against the registries; all problems in one error."""
    from sweep.catalog.archs import ARCHS
    from sweep.catalog.datasets import DATASETS
    from sweep.tasks.prune import ALLOCATIONS
    from sweep.tasks.repair import repair_params

    problems = []
    for dataset, arch in grid.pairs:
        if dataset not in DATASETS:
            problems.append(f"unknown dataset {dataset!r}; expected one of: {', '.join(DATASETS)}")
        if arch not in ARCHS:
            problems.append(f"unknown arch {arch!r}; expected one of: {', '.join(ARCHS)}")
        elif dataset in DATASETS:
            try:
                ARCHS[arch].check_image_size(DATASETS[dataset].image_size)
            except UserError as error:
                problems.append(f"{dataset} × {arch}: {error}")
    for allocation in grid.allocations:
        if allocation not in ALLOCATIONS:
            problems.append(
                f"unknown allocation {allocation!r}; expected one of: {', '.join(ALLOCATIONS)}"
            )
    for sparsity in grid.sparsities:
        if not (0.0 <= sparsity < 1.0):
            problems.append(f"sparsity {sparsity!r} is outside [0, 1)")
    for repair in grid.repairs:
        try:
            repair_params(repair.method, **repair.params_dict)
        except UserError as error:
            problems.append(str(error))
    if not grid.seeds:
        problems.append("seeds must not be empty")
    if not grid.replicates:
        problems.append("replicates must not be empty (e.g. [0, 1, 2])")
    for replicate in grid.replicates:
        if isinstance(replicate, bool) or not isinstance(replicate, int) or replicate < 0:
            problems.append(f"replicate {replicate!r} must be a non-negative integer")
    if grid.eval_split not in EVAL_SPLITS:
        problems.append(
            f"unknown eval_split {grid.eval_split!r}; expected one of: {', '.join(EVAL_SPLITS)}"
        )
    if grid.calib_size < 1:
        problems.append(f"calib_size {grid.calib_size} must be at least 1")
    if grid.eval_limit is not None and grid.eval_limit < 1:
        problems.append(f"eval_limit {grid.eval_limit} must be at least 1 (or null for all)")
    for key, value in grid.resources.items():
        if value < 0:
            problems.append(f"resources.{key} {value} must not be negative")
    if problems:
        raise UserError(f"grid {grid.name!r} is invalid: " + "; ".join(problems))
