"""`python -m sweep.upgrade STORE`: bring a store written with an older trial-key schema up to date.

What is filled in for each older schema, and how: `sweep.results.legacy`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sweep.core.arguments import ArgumentParser
from sweep.core.errors import cli_main
from sweep.plan.identity import KEY_SCHEMA
from sweep.results.legacy import BACKUP_SUFFIX, legacy_rows, upgrade_store
from sweep.results.store import ResultStore, StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m sweep.upgrade",
        description=(
            "Upgrade a result store written with an older trial-key schema to today's "
            f"({KEY_SCHEMA}), so a resumed sweep recognises its finished trials and the analysis "
            "can read it. The old files are copied to STORE" + BACKUP_SUFFIX + " first."
        ),
    )
    parser.add_argument("store", type=Path, help="result store directory")
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be upgraded; write nothing"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    store = ResultStore(args.store)
    if store.root.is_file():
        raise StoreError(f"{str(store.root)!r} is a file; a result store is a directory")
    if not store.root.is_dir():
        raise StoreError(f"result store {str(store.root)!r} does not exist")
    files = store.survey()
    if not files.usable and not files.legacy:
        reason = f" (all {len(files.damaged)} Parquet files are damaged)" if files.damaged else ""
        raise StoreError(f"{str(store.root)!r} is not a prune-sweep result store{reason}")
    legacy = list(files.legacy)
    if not legacy:
        print(f"{store.root}: nothing to upgrade (every file has key schema {KEY_SCHEMA})")
        return 0
    if args.dry_run:
        rows = legacy_rows(store, legacy)
        keys = {row["trial_key"] for row in rows}
        print(f"{store.root}: would upgrade {len(rows)} rows ({len(keys)} trials) in "
              f"{len(legacy)} file(s)")  # fmt: skip
        return 0
    report = upgrade_store(store)
    print(
        f"{store.root}: upgraded {report.rows} rows in {report.files} file(s); "
        f"the old files are in {report.backup}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
