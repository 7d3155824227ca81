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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sweep.catalog.datasets import EVAL_SPLITS
from sweep.core.errors import UnknownNameError, UserError
from sweep.plan.identity import SPARSITY_DECIMALS, RepairSpec, TrialConfig, uses_calibration
from sweep.plan.variants import variant_name


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


MAX_SPARSITIES = 1000  # a {start, stop, step} field making more is a typo (step 1e-6?)
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
                    # A repair that draws no calibration set has seed 0 whatever the grid says.
                    seeds = grid.seeds if uses_calibration(repair.method) else grid.seeds[:1]
                    for seed in seeds:
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
    raw = _read_mapping(path)
    unknown = set(raw) - _FILE_FIELDS
    if unknown:
        raise UserError(
            f"grid file {str(path)!r}: unknown field(s) {sorted(map(str, unknown))}; "
            f"allowed: {', '.join(sorted(_FILE_FIELDS))}"
        )
    resources = raw.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - _RESOURCE_FIELDS:
        raise UserError(
            f"grid file {str(path)!r}: resources must be a mapping with keys "
            f"{', '.join(sorted(_RESOURCE_FIELDS))}; got {resources!r}"
        )
    return Grid(
        name=str(raw.get("name", path.stem)),
        pairs=_pairs(raw, path),
        allocations=tuple(str(a) for a in _list(raw, "allocations", path)),
        sparsities=_sparsities(raw.get("sparsities"), path),
        repairs=tuple(_repair(r, path) for r in _list(raw, "repairs", path)),
        seeds=_ints(raw, "seeds", path, default=(0,)),
        replicates=_ints(raw, "replicates", path, default=(0,)),
        eval_split=str(raw.get("eval_split", "test")),
        calib_size=_int(raw.get("calib_size", 1024), "calib_size", path),
        eval_limit=None
        if raw.get("eval_limit") is None
        else _int(raw["eval_limit"], "eval_limit", path),
        resources={k: _number(v, f"resources.{k}", path) for k, v in resources.items()},
    )


def _read_mapping(path: Path) -> dict:
    """The file's YAML mapping; a missing, unreadable or malformed file is one UserError line."""
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise UserError(f"grid file {str(path)!r} {problem}; expected a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(_yaml_error_line(path, error)) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise UserError(f"grid file {str(path)!r} cannot be read ({reason})") from None
    if not isinstance(raw, dict):
        raise UserError(f"grid file {str(path)!r} must hold a mapping of fields; got {raw!r:.80}")
    return raw


def _pairs(raw: dict, path: Path) -> tuple[tuple[str, str], ...]:
    """`pairs`, or the product of `datasets` and `archs` (each listing a name once)."""
    if "pairs" not in raw:
        datasets, archs = (_distinct(raw, key, path) for key in ("datasets", "archs"))
        return tuple((str(d), str(a)) for d in datasets for a in archs)
    both = sorted({"datasets", "archs"} & set(raw))
    if both:
        raise UserError(
            f"grid file {str(path)!r}: pairs given together with {' and '.join(both)}; "
            "expected either pairs or datasets with archs"
        )
    return tuple(_pair(p, path) for p in _list(raw, "pairs", path))


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


def _distinct(raw: dict, key: str, path: Path) -> list:
    """`_list`, refusing a name listed twice (its trials would be planned twice)."""
    values = _list(raw, key, path)
    twice = _repeated(values)
    if twice:
        raise UserError(f"grid file {str(path)!r}: {key} lists {twice[0]!r} more than once")
    return values


def _ints(raw: dict, key: str, path: Path, default: tuple[int, ...]) -> tuple[int, ...]:
    """A non-empty list of integers, or `default` when the field is absent."""
    if key not in raw:
        return default
    return tuple(_int(value, key, path) for value in _list(raw, key, path))


def _pair(value: Any, path: Path) -> tuple[str, str]:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise UserError(f"grid file {str(path)!r}: a pair is [dataset, arch]; got {value!r}")
    return str(value[0]), str(value[1])


def _int(value: Any, key: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"grid file {str(path)!r}: {key} must be an integer; got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    """An int or float; YAML's true and false are not numbers here."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: Any, key: str, path: Path) -> float:
    if not _is_number(value):
        raise UserError(f"grid file {str(path)!r}: {key} must be a number; got {value!r}")
    return float(value)


def _sparsities(value: Any, path: Path) -> tuple[float, ...]:
    if isinstance(value, dict) and set(value) == {"start", "stop", "step"}:
        return _sparsity_range(value, path)
    if isinstance(value, list) and value and all(_is_number(s) for s in value):
        return tuple(round(float(s), SPARSITY_DECIMALS) for s in value)
    raise UserError(
        f"grid file {str(path)!r}: sparsities must be a list of numbers or "
        f"{{start, stop, step}}; got {value!r}"
    )


def _sparsity_range(value: dict, path: Path) -> tuple[float, ...]:
    """`sparsity_range` of a {start, stop, step} field that makes 1 to MAX_SPARSITIES points."""
    start, stop, step = (
        _number(value[k], f"sparsities.{k}", path) for k in ("start", "stop", "step")
    )
    if not (step > 0 and 0 <= (stop - start) / step < MAX_SPARSITIES):  # NaN fails too
        raise UserError(
            f"grid file {str(path)!r}: sparsities {value!r} must run from start up to stop "
            f"(stop >= start) in at most {MAX_SPARSITIES} steps of step > 0"
        )
    return sparsity_range(start, stop, step)


def _repair(value: Any, path: Path) -> RepairSpec:
    if isinstance(value, str):
        return RepairSpec(value)
    if isinstance(value, dict) and "method" in value and set(value) <= {"method", "params"}:
        params = value.get("params") or {}
        if isinstance(params, dict) and all(isinstance(name, str) for name in params):
            return RepairSpec(str(value["method"]), tuple(sorted(params.items())))
    raise UserError(
        f"grid file {str(path)!r}: a repair is a method name or {{method, params}} with "
        f"parameter names as keys; got {value!r}"
    )


def _repeated(values: Sequence[Any]) -> list[Any]:
    """The values listed more than once, each once, in order; by equality, since a repair's
    parameters may hold unhashable values."""
    found: list[Any] = []
    for i, value in enumerate(values):
        if value in values[:i] and value not in found:
            found.append(value)
    return found


def validate(grid: Grid) -> None:
    """Check every name and value against the registries; all problems in one error."""
    from sweep.catalog.allocations import ALLOCATIONS
    from sweep.catalog.archs import ARCHS
    from sweep.catalog.datasets import DATASETS
    from sweep.catalog.repairs import repair_params

    problems = []
    archs = dict.fromkeys(arch for _, arch in grid.pairs)
    lookups = [(DATASETS, grid.datasets), (ARCHS, archs), (ALLOCATIONS, grid.allocations)]
    for registry, names in lookups:
        for name in names:
            try:
                registry[name]
            except UnknownNameError as error:
                problems.append(str(error))
    for dataset, arch in grid.pairs:
        if dataset in DATASETS and arch in ARCHS:
            try:
                ARCHS[arch].check_image_size(DATASETS[dataset].image_size)
            except UserError as error:
                problems.append(f"{dataset} × {arch}: {error}")
    for sparsity in grid.sparsities:
        if not (0.0 <= sparsity < 1.0):
            problems.append(f"sparsity {sparsity!r} is outside [0, 1)")
    for repair in grid.repairs:
        try:
            repair_params(repair.method, **repair.params_dict)
        except UserError as error:
            problems.append(str(error))
    problems += _seed_problems(grid)
    problems += _repeat_problems(grid)
    if grid.eval_split not in EVAL_SPLITS:
        problems.append(
            f"unknown eval_split {grid.eval_split!r}; expected one of: {', '.join(EVAL_SPLITS)}"
        )
    if grid.calib_size < 1:
        problems.append(f"calib_size {grid.calib_size} must be at least 1")
    if grid.eval_limit is not None and grid.eval_limit < 1:
        problems.append(f"eval_limit {grid.eval_limit} must be at least 1 (or null for all)")
    for key, value in grid.resources.items():
        if not (math.isfinite(value) and value >= 0):
            problems.append(f"resources.{key} {value} must be a finite number, at least 0")
    if not _is_folder_name(grid.name):
        problems.append(
            f"name {grid.name!r} must be a plain folder name: it names the default store "
            "results/<name>"
        )
    if problems:
        raise UserError(f"grid {grid.name!r} is invalid: " + "; ".join(problems))


def _seed_problems(grid: Grid) -> list[str]:
    """Seeds and replicates: non-negative integers that fit the store's integer columns."""
    from sweep.results.schema import integer_range

    problems = []
    for axis, values in (("seed", grid.seeds), ("replicate", grid.replicates)):
        top = integer_range(axis)[1]
        if not values:
            problems.append(f"{axis}s must not be empty (e.g. [0, 1, 2])")
        problems += [
            f"{axis} {value!r} must be a non-negative integer, at most {top}"
            for value in values
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top
        ]
    return problems


def _repeat_problems(grid: Grid) -> list[str]:
    """A value listed twice on an axis would plan its trials (and train its checkpoint) twice."""
    axes = {
        "pairs": grid.pairs,
        "allocations": grid.allocations,
        "sparsities": grid.sparsities,
        "repairs": grid.repairs,
        "seeds": grid.seeds,
        "replicates": grid.replicates,
    }
    return [
        f"{axis} lists {_shown(value)!r} more than once"
        for axis, values in axes.items()
        for value in _repeated(list(values))
    ]


def _shown(value: Any) -> Any:
    """A repair as a grid file spells it, e.g. channel_var_shrink[tau=0.5]; other values as is."""
    if isinstance(value, RepairSpec):
        return variant_name(value.method, value.params_dict)
    return value


def _is_folder_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name
