"""`make demo`: the embedded demo end to end on this machine.

Fashion-MNIST (Debian's package, or a download) → three dense ResNet-20 replicates (trained once,
side by side as Ray tasks, then reused) → the `demo` grid on Ray (resumes if run again) → the HTML
regime report, whose path it prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sweep.core import paths
from sweep.core.arguments import ArgumentParser, add_option_flags, add_renamed_flag
from sweep.core.errors import DataMissingError, cli_main
from sweep.plan.grid import DEMO
from sweep.plan.options import LaunchOptions


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m sweep.demo",
        description="Run the demo: check Fashion-MNIST, train the missing dense replicates, "
        "run the demo grid and write the HTML report.",
    )
    add_option_flags(parser, LaunchOptions, only=("store", "checkpoints", "data_root"))
    parser.add_argument(
        "-o", "--output", type=Path, help="HTML report path (default: next to the store)"
    )
    add_renamed_flag(parser, "--out", "--store")
    add_renamed_flag(parser, "--report", "--output")
    return parser


def run(args: argparse.Namespace) -> int:
    from analysis.report import write_report
    from sweep.plan.grid import checkpoints_needed
    from sweep.run.launcher import run_grid
    from sweep.tasks import data

    for dataset in DEMO.datasets:
        if data.find_data(dataset, args.data_root) is None:
            raise DataMissingError(data.missing_data_message(dataset, args.data_root))
    for dataset, arch, replicate in checkpoints_needed(DEMO):
        _set_aside_if_outdated(args.checkpoints, dataset, arch, replicate)
    print(f"[demo] running the {DEMO.name} grid (missing dense checkpoints are trained first)")
    store = args.store or paths.default_store(DEMO.name)
    summary = run_grid(
        DEMO, store=store, checkpoints=args.checkpoints, data_root=args.data_root, pretrain="auto"
    )
    report = write_report(store, args.output)
    print(f"[demo] report: {report.resolve()}")
    return summary.exit_code


def _set_aside_if_outdated(checkpoints: Path, dataset: str, arch: str, replicate: int) -> None:
    """A checkpoint that no longer fits today's architecture or splits is renamed (never
    deleted), so the launcher trains a fresh one."""
    from sweep.tasks import models

    path = paths.checkpoint_file(checkpoints, dataset, arch, replicate)
    if not path.exists():
        return
    try:
        models.verify_checkpoint(path, dataset, arch, replicate)
    except models.OutdatedCheckpointError as error:
        aside = path.with_name(f"{path.stem}.outdated{path.suffix}")
        path.rename(aside)
        models.sidecar_path(path).rename(models.sidecar_path(aside))
        print(f"[demo] {error}; kept as {aside}")


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
