"""Cells: the unit a sweep schedules. A cell is every grid point of one pruned model.

Why: the points of one (checkpoint, allocation, sparsity, eval set) — each repair variant and
calibration seed — load the same checkpoint, build the same masks and pruned weights and evaluate
on the same images. One Tune trial per point spends Tune's fixed cost (seconds) on milliseconds
of work; one trial per cell loads and prunes once and runs every point of it. A grid with more
cells than is useful to schedule packs several cells of one checkpoint into a trial (a *chunk*).

Cells change neither a point's identity nor its row: every point keeps its own trial key.
Torch-free: the driver plans cells without loading a model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sweep.core.errors import UserError
from sweep.plan.identity import TrialConfig

# Above this many Tune trials the driver's per-trial cost dominates (measured: 0.06-0.09 s per
# trial on 2 cores, growing with the count); a chunk of several cells keeps the count below it.
MAX_TRIALS = 400


def checkpoint_of(config: TrialConfig) -> tuple:
    """The dense checkpoint a point prunes."""
    return config.dataset, config.arch, config.replicate, config.checkpoint_sha256


def cell_of(config: TrialConfig) -> tuple:
    """What the points of one cell share: one checkpoint, one pruned model, one eval set."""
    return (
        *checkpoint_of(config),
        config.allocation,
        config.sparsity,
        config.eval_split,
        config.eval_limit,
        config.eval_precision,
    )


@dataclass(frozen=True)
class Cell:
    """The points (repair variant × seed) of one pruned model, in grid order."""

    points: tuple[TrialConfig, ...]

    def __post_init__(self) -> None:
        if not self.points or len({cell_of(p) for p in self.points}) != 1:
            raise ValueError("a cell holds one or more points of one pruned model")

    @property
    def head(self) -> TrialConfig:
        """Any point of the cell: they agree on everything the cell shares."""
        return self.points[0]

    def describe(self) -> str:
        head = self.head
        return (
            f"{head.dataset}/{head.arch} replicate={head.replicate} {head.allocation} "
            f"s={head.sparsity:g} ({len(self.points)} points)"
        )


def group_cells(points: Iterable[TrialConfig]) -> list[Cell]:
    """Points grouped into cells, cells of one checkpoint next to each other, grid order kept."""
    grouped: dict[tuple, list[TrialConfig]] = {}
    for point in points:
        grouped.setdefault(cell_of(point), []).append(point)
    cells = [Cell(tuple(members)) for members in grouped.values()]
    first_seen: dict[tuple, int] = {}
    for index, cell in enumerate(cells):
        first_seen.setdefault(checkpoint_of(cell.head), index)
    return sorted(cells, key=lambda cell: first_seen[checkpoint_of(cell.head)])  # stable


def check_cells_per_trial(value: object) -> int | None:
    """A positive whole number of cells per trial, or None (chosen from the grid's size)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"--cells-per-trial {value!r} must be a positive whole number")
    return value


def cells_per_trial(cells: int, requested: int | None) -> int:
    """`requested`, or the fewest cells per trial that keeps the trial count at MAX_TRIALS."""
    return requested if requested is not None else max(1, math.ceil(cells / MAX_TRIALS))


def chunk_cells(cells: Sequence[Cell], per_trial: int) -> list[tuple[Cell, ...]]:
    """Consecutive cells of one checkpoint, `per_trial` at most, as the trials' work lists."""
    chunks: list[tuple[Cell, ...]] = []
    current: list[Cell] = []
    for cell in cells:
        full = len(current) == per_trial
        if current and (full or checkpoint_of(cell.head) != checkpoint_of(current[0].head)):
            chunks.append(tuple(current))
            current = []
        current.append(cell)
    if current:
        chunks.append(tuple(current))
    return chunks


def encode_chunk(chunk: Sequence[Cell]) -> bytes:
    """A chunk as compact JSON: the driver ships one bytes object per trial, never configs."""
    return json.dumps(
        [[point.to_dict() for point in cell.points] for cell in chunk], separators=(",", ":")
    ).encode()


def decode_chunk(blob: bytes) -> list[Cell]:
    return [
        Cell(tuple(TrialConfig.from_dict(point) for point in cell)) for cell in json.loads(blob)
    ]
