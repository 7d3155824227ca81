"""What every table reads: the coded grid, its statistics, and what each pair ran."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from analysis.boundaries import first_crossings
from analysis.coding import CodedRows
from analysis.definitions import repair_role
from analysis.statistics import Statistics


class TableInputs:
    """The grid each (dataset, arch) pair expects, so a table can tell a point that is missing
    from one the pair never ran, with the error and unusable rows counted per point."""

    def __init__(self, coded: CodedRows, stats: Statistics, taus: tuple[float, ...]) -> None:
        self.coded, self.stats, self.taus = coded, stats, taus
        self.errors = coded.count(coded.failed)
        # ok rows whose r cannot be computed (no top-1, dense top-1 at or below chance)
        self.unusable = coded.count(~coded.valid & ~coded.failed)
        rows = coded.count(np.ones(len(coded.r), bool))
        self.in_grid = rows.sum(axis=(1, 2)) > 0  # [P, S] sparsities of the pair's grid
        self.has_alloc = rows.sum(axis=(1, 3)) > 0  # [P, A]
        self.has_variant = rows.sum(axis=(2, 3)) > 0  # [P, M]
        self.roles = np.array([repair_role(v) for v in coded.variants], dtype=object)
        self.trials = rows.sum(axis=(1, 3))  # [P, A]
        self.error_trials = self.errors.sum(axis=(1, 3))
        self.crossings = [first_crossings(stats.r, coded.grid, tau) for tau in taus]
        self._keys = coded.pairs.to_dict(orient="records")

    def cells(self) -> Iterator[tuple[int, int, int]]:
        """Yield (p, m, a) for every expected curve: the pair ran that allocation and variant."""
        p_, m_, a_, _ = self.coded.shape
        for p in range(p_):
            for a in range(a_):
                if not self.has_alloc[p, a]:
                    continue
                for m in range(m_):
                    if self.has_variant[p, m]:
                        yield p, m, a

    def key(self, p: int) -> dict:
        """The pair's (dataset, arch) columns, a fresh dict for one record."""
        return dict(self._keys[p])
