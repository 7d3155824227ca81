"""`make demo`: the embedded demo end to end on this machine.

Fashion-MNIST (Debian's package, or a download) → dense ResNet-20 (trained once, then reused) →
the `demo` grid on Ray (resumes if run again) → the HTML regime report, whose path it prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sweep.errors import DataMissingError, cli_main
from sweep.grid import DEMO


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    from sweep import launch
    from sweep.tasks import data, models, train

    for dataset in DEMO.datasets:
        if data.find_data(dataset, args.data_root) is None:
            raise DataMissingError(data.missing_data_message(dataset, args.data_root))
    for dataset, arch in DEMO.pairs:
        if not models.checkpoint_path(args.checkpoints, dataset, arch).exists():
            print(f"[demo] training the dense {arch} on {dataset} (once; resumable)")
            train.train_dense(dataset, arch, out_dir=args.checkpoints, data_root=args.data_root)
    print(f"[demo] running the {DEMO.name} grid")
    launch_argv = [
        "--grid",
        DEMO.name,
        "--out",
        str(args.out),
        "--checkpoints",
        str(args.checkpoints),
    ]
    if args.data_root:
        launch_argv += ["--data-root", str(args.data_root)]
    status = launch.main(launch_argv)
    if status == 2:
        return status
    report = write_report(args.out, args.report)
    print(f"[demo] report: {report.resolve()}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
