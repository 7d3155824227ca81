"""`make demo`: the embedded demo end to end on this machine.

Fashion-MNIST (Debian's package, or a download) → dense ResNet-20 (trained once, then reused) →
the `demo` grid on Ray (resumes if run again) → the HTML regime report, whose path it prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sweep.arguments import ArgumentParser
from sweep.errors import DataMissingError, cli_main
from sweep.grid import DEMO


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m sweep.demo",
        description="Run the demo: prepare Fashion-MNIST, train the dense model if missing, "
        "run the demo grid and write the HTML report.",
    )
    parser.add_argument("--out", type=Path, default=Path("results") / DEMO.name)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--report", type=Path, help="report path (default: next to --out)")
    return parser


def run(args: argparse.Namespace) -> int:
    from analysis.report import write_report
    from sweep.launch import run_grid
    from sweep.tasks import data, models, train

    for dataset in DEMO.datasets:
        if data.find_data(dataset, args.data_root) is None:
            raise DataMissingError(data.missing_data_message(dataset, args.data_root))
    for dataset, arch in DEMO.pairs:
        path = models.checkpoint_path(args.checkpoints, dataset, arch)
        if path.exists() and _outdated(path, dataset, arch):
            aside = path.with_name(f"{path.stem}.outdated{path.suffix}")
            path.rename(aside)
            models.sidecar_path(path).rename(models.sidecar_path(aside))
            print(f"[demo] {path} was trained for an older {arch} layout; kept as {aside}")
        if not path.exists():
            print(f"[demo] training the dense {arch} on {dataset} (once; resumable)")
            train.train_dense(dataset, arch, out_dir=args.checkpoints, data_root=args.data_root)
    print(f"[demo] running the {DEMO.name} grid")
    summary = run_grid(DEMO, out=args.out, checkpoints=args.checkpoints, data_root=args.data_root)
    report = write_report(args.out, args.report)
    print(f"[demo] report: {report.resolve()}")
    return summary.exit_code


def _outdated(path: Path, dataset: str, arch: str) -> bool:
    """Whether a demo checkpoint no longer fits today's architecture (then it is retrained)."""
    from sweep.tasks import models

    try:
        models.verify_checkpoint(path, dataset, arch)
    except models.OldLayoutError:
        return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
