"""Every allocation of a global sparsity over the prunable layers, in display order.

The allocation is the study's independent variable: grids name it, trial keys hold it, tables and
legends list it in this order. Torch-free, so those checks and the analysis need no torch;
`sweep.tasks.allocations` implements each entry (the exact definitions and rounding are there).
"""

from __future__ import annotations

from dataclasses import dataclass

from sweep.catalog.registry import Registry, named_registry


@dataclass(frozen=True)
class AllocationInfo:
    """One allocation: its name, in one line how it spreads the kept weights, and whether its
    per-layer counts follow from layer shapes alone (then a model built on the meta device tells
    before Ray starts whether it reaches a sparsity; ranking weight values reaches any)."""

    name: str
    summary: str
    from_shapes: bool


ALLOCATIONS: Registry[AllocationInfo] = named_registry(
    "allocation",
    (
        AllocationInfo(
            "erk", "Evci et al. (2020): density ~ sum(shape) / prod(shape), at most 1", True
        ),
        AllocationInfo("lamp", "global top-K of LAMP scores (Lee et al., 2021)", False),
        AllocationInfo("uniform", "every layer at the global sparsity", True),
        AllocationInfo(
            "uniform_plus",
            "Gale et al. (2019): first conv dense, classifier at most 80 % sparse, rest uniform",
            True,
        ),
        AllocationInfo("global", "one |w| threshold over all layers", False),
    ),
)
