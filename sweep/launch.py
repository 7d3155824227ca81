"""`python -m sweep.launch`: run a grid on Ray Tune, one Parquet row per finished grid point.

Preflight first (names, data, checkpoints; nothing written on failure), then Ray, optional dense
training as Ray tasks, then the missing grid points grouped into cells (every point of one pruned
model), one Tune trial per cell or per chunk of cells of one checkpoint. Rerunning the same command
resumes: points whose key already has an `ok` row are skipped, errored ones run again. The stages
live in `sweep.run.launcher`; the flags derive from `sweep.plan.options.LaunchOptions`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our store is the log
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from sweep.core.arguments import ArgumentParser, add_option_flags, add_renamed_flag  # noqa: E402
from sweep.core.errors import cli_main  # noqa: E402
from sweep.plan.grid import NAMED_GRIDS  # noqa: E402
from sweep.plan.options import LaunchOptions  # noqa: E402
from sweep.plan.preflight import Plan  # noqa: E402
from sweep.run.launcher import prepare, run_grid  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m sweep.launch",
        description=(
            "Run a pruning × label-free repair grid on Ray Tune. Each trial loads a dense "
            "checkpoint, prunes it with the grid's allocation and sparsity, repairs it without "
            "labels and evaluates it; every finished grid point becomes one Parquet row in the "
            "result store (--store). Running the same command again resumes where it stopped."
        ),
    )
    parser.add_argument(
        "--grid",
        required=True,
        help=f"a named grid ({', '.join(NAMED_GRIDS)}) or a YAML grid file",
    )
    add_option_flags(parser, LaunchOptions)
    add_renamed_flag(parser, "--out", "--store")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would run and what is missing; no Ray"
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="--dry-run output"
    )
    return parser


def print_plan(plan: Plan, fmt: str) -> None:
    summary = plan.summary()
    if fmt == "json":
        print(json.dumps(summary, indent=2))
        return
    print(
        f"grid {summary['grid']}: {summary['trials']} trials in {summary['cells']} cells, "
        f"{summary['done']} done, {summary['todo']} to run"
    )
    print(f"  {'dataset':<14} {'arch':<12} {'trials':>7} {'to run':>7}")
    for pair in summary["pairs"]:
        print(f"  {pair['dataset']:<14} {pair['arch']:<12} {pair['trials']:>7} {pair['todo']:>7}")
    missing = summary["missing"]
    for name in missing["data"]:
        print(f"missing data: {name}")
    for name in missing["checkpoints"]:
        print(f"missing checkpoint: {name}")
    for text in missing["bad_checkpoints"]:
        print(f"bad checkpoint: {text}")
    for text in missing["damaged_store_files"]:
        print(f"damaged store file: {text}")
    if summary["legacy_store_files"]:
        print(
            f"{summary['legacy_store_files']} store file(s) of an older trial-key schema: a launch "
            "upgrades them first (their finished trials count as done above)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


def run(args: argparse.Namespace) -> int:
    options = LaunchOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(LaunchOptions)}
    )
    if args.dry_run:
        print_plan(prepare(args.grid, options, dry_run=True), args.format)
        return 0
    return run_grid(args.grid, options).exit_code


if __name__ == "__main__":
    sys.exit(main())
