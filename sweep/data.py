"""`python -m sweep.data`: see where each dataset is, and download the ones that can be.

    python -m sweep.data list [--data-root DIR]
    python -m sweep.data download NAME [--data-root DIR] [--mirror URL] [--skip-checksums]

`download` fetches the official files torchvision would (CIFAR-10/100, Imagenette 320 px,
Fashion-MNIST) into the data root, checks their MD5s and unpacks them; on any failure it prints
one line, exits 2 and leaves the data root as it was. `--mirror URL` (or $PRUNE_SWEEP_MIRROR)
replaces the host of the official URLs, keeping their paths. Files that are not the official
bytes load only with `--skip-checksums` (then also set PRUNE_SWEEP_SKIP_CHECKSUMS=1 for the CIFAR
loader, which checks the unpacked pickles again).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from sweep.catalog.datasets import DATASET_NAMES
from sweep.core.arguments import ArgumentParser
from sweep.core.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m sweep.data", description="Find and download the sweep's datasets."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="where each dataset is, and how to get it")
    fetch = commands.add_parser("download", help="fetch a dataset into the data root")
    fetch.add_argument("name", help=f"one of: {', '.join(DATASET_NAMES)}")
    fetch.add_argument(
        "--mirror",
        default=None,
        help="http(s) URL that replaces the host of the official URLs "
        "(default: $PRUNE_SWEEP_MIRROR, else the official hosts)",
    )
    fetch.add_argument(
        "--skip-checksums",
        action="store_true",
        help="accept files whose MD5 differs from the official release (says so for each file)",
    )
    for command in (listing, fetch):
        command.add_argument(
            "--data-root", type=Path, default=None, help="data folder (default: ./data)"
        )
    return parser


def run(args: argparse.Namespace) -> int:
    from sweep.tasks import data  # torch: only once the arguments parsed

    if args.command == "download":
        folder = data.download(
            args.name,
            args.data_root,
            mirror=args.mirror,
            verify_checksums=not args.skip_checksums,
        )
        print(f"{args.name}: {folder}")
        return 0
    rows = [("dataset", "found at", "to get it")]
    for name in DATASET_NAMES:
        folder = data.find_data(name, args.data_root)
        todo = "-" if folder is not None else data.how_to_get(name, args.data_root)
        rows.append((name, str(folder) if folder is not None else "missing", todo))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, where, todo in rows:
        print(f"{name:<{widths[0]}}  {where:<{widths[1]}}  {todo}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
