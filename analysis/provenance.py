"""What an HTML report or a Markdown document was made from: one builder for both.

Why one: the page and the document state the same facts about a store (its grid, trials, repair
variants, sparsities, τ, intervals, skipped files, versions); computed twice, they drift apart.
`StoreFacts` computes each fact once; `report_provenance` and `markdown_provenance` only choose
which facts each shows, in its order and its markup.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import pandas as pd

from analysis import intervals
from analysis.definitions import PAIR, RegimeTables
from analysis.loading import Results
from sweep.results.schema import STATUS_OK

SHA_PREFIX = 12  # characters of a checkpoint's sha256 the document shows
Fact = tuple[str, str]


def distinct(series: pd.Series) -> str:
    """The column's distinct values, sorted as text, or n/a."""
    values = series.dropna().unique()
    return ", ".join(sorted(map(str, values))) or "n/a"


class StoreFacts:
    """The facts of one analysed store, each computed one way."""

    def __init__(self, results: Results, tables: RegimeTables) -> None:
        self.results, self.tables, self.frame = results, tables, results.frame
        self.ok = self.frame["status"] == STATUS_OK

    def values(self, column: str) -> str:
        return distinct(self.frame[column])

    def per_pair(self, column: str, shown: Callable[[object], str]) -> str:
        """The column's values, per `dataset / arch` when the store holds more than one pair."""
        groups = list(self.frame.groupby(PAIR, sort=True))
        parts = []
        for (dataset, arch), own in groups:
            values = ", ".join(sorted({shown(v) for v in own[column].dropna()})) or "n/a"
            parts.append(values if len(groups) == 1 else f"{dataset} / {arch}: {values}")
        return "; ".join(parts)

    def skipped(self, path: Callable[[str], str] = str) -> str:
        """The damaged files left out of the analysis, each with its reason."""
        files = self.results.skipped
        return "; ".join(f"{path(str(file))}: {reason}" for file, reason in files) or "none"

    def ok_rows(self) -> int:
        return int(self.ok.sum())

    def failed_rows(self) -> int:
        return int((~self.ok).sum())

    def failures(self) -> str:
        """The five most common error messages with their counts."""
        errors = self.frame.loc[~self.ok, "error"].fillna("(no message)").value_counts().head(5)
        return "; ".join(f"{count} × {message}" for message, count in errors.items()) or "none"

    def finished(self) -> str:
        finished = self.frame["finished_at"].dropna()
        if not len(finished):
            return "n/a"
        return f"{finished.min():%Y-%m-%d %H:%M} to {finished.max():%Y-%m-%d %H:%M} UTC"

    def curve_values(self, column: str) -> str:
        """The column's values in the tables' order (allocations, repair variants)."""
        return ", ".join(dict.fromkeys(self.tables.curves[column]))

    def sparsities(self) -> str:
        return ", ".join(f"{s:g}" for s in sorted(self.tables.curves["sparsity"].unique()))

    def taus(self) -> str:
        return ", ".join(f"{t:g}" for t in self.tables.taus)

    def intervals(self) -> str:
        return intervals.interval_text(self.tables.confidence, self.tables.resamples)


def report_provenance(
    results: Results, tables: RegimeTables, density_sparsity: float
) -> list[Fact]:
    """The HTML report's provenance: the store, its trials and failures, versions and dates."""
    facts, curves = StoreFacts(results, tables), tables.curves
    return [
        ("result store", str(results.root.resolve())),
        ("skipped damaged files", facts.skipped()),
        ("report written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("grid", facts.values("grid")),
        ("trials", f"{len(facts.frame)} ({facts.ok_rows()} ok, {facts.failed_rows()} failed)"),
        ("failures (most common)", facts.failures()),
        ("datasets", facts.values("dataset")),
        ("architectures", facts.values("arch")),
        ("allocations", facts.values("allocation")),
        ("repair variants", facts.curve_values("repair_variant")),
        ("sparsities", facts.sparsities()),
        ("seeds per point (max)", str(int(curves["seeds"].max()))),
        ("replicates per point (max)", str(int(curves["replicates"].max()))),
        ("dense checkpoints", str(facts.frame["checkpoint_sha256"].nunique())),
        ("eval split", facts.values("eval_split")),
        ("eval precision", facts.values("eval_precision")),
        ("trials finished", facts.finished()),
        ("tau", facts.taus()),
        ("intervals", facts.intervals()),
        ("density profile sparsity", f"{density_sparsity:g}"),
        ("torch (trials)", facts.values("torch_version")),
        ("torchvision (trials)", facts.values("torchvision_version")),
        ("ray (trials)", facts.values("ray_version")),
        ("prune-sweep (trials)", facts.values("prune_sweep_version")),
        ("report environment", _environment()),
    ]


def markdown_provenance(results: Results, tables: RegimeTables) -> list[Fact]:
    """The Markdown document's provenance: the store and what each pair was evaluated on."""
    facts, frame = StoreFacts(results, tables), results.frame
    pairs = frame[PAIR].drop_duplicates().sort_values(PAIR)
    seeds = ", ".join(str(s) for s in sorted(frame.loc[facts.ok, "seed"].unique()))
    return [
        ("result store", f"`{results.root}`"),
        ("grid", facts.values("grid")),
        ("rows", f"{facts.ok_rows()} ok, {facts.failed_rows()} error (latest row per trial key)"),
        ("dataset / arch", ", ".join(f"{d} / {a}" for d, a in pairs.itertuples(index=False))),
        (
            "dense checkpoints (sha256)",
            facts.per_pair("checkpoint_sha256", lambda v: f"`{str(v)[:SHA_PREFIX]}`"),
        ),
        ("eval images", facts.per_pair("eval_size", _count)),
        ("calibration images", facts.per_pair("calib_size", _count)),
        ("calibration seeds", seeds or "n/a"),
        ("allocations", facts.curve_values("allocation")),
        ("repair variants", facts.curve_values("repair_variant")),
        ("sparsities", facts.sparsities()),
        ("tau", facts.taus()),
        ("replicates (dense checkpoints)", facts.per_pair("replicate", _count)),
        ("eval split", facts.per_pair("eval_split", str)),
        ("eval precision", facts.per_pair("eval_precision", str)),
        ("intervals", facts.intervals()),
        ("prune-sweep (trials)", facts.values("prune_sweep_version")),
        ("skipped damaged files", facts.skipped(lambda path: f"`{path}`")),
    ]


def _count(value: object) -> str:
    return str(int(value))


def _environment() -> str:
    """Python and the analysis's own libraries, as installed where the report is written."""

    def known(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} (not installed)"

    names = ("numpy", "pandas", "pyarrow", "plotly", "prune-sweep")
    return ", ".join([f"python {platform.python_version()}", *map(known, names)])
