"""``python -m sweep.pretrain``: train a dense checkpoint (one replicate) that the sweep prunes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sweep.catalog.archs import ARCH_NAMES
from sweep.catalog.datasets import DATASETS
from sweep.core.arguments import ArgumentParser, add_option_flags, add_renamed_flag
from sweep.core.errors import cli_main
from sweep.plan.options import LaunchOptions
from sweep.tasks.train import FINETUNE_LR, SCRATCH_LR, train_dense


def build_parser() -> argparse.ArgumentParser:
    epochs = ", ".join(f"{info.name} {info.default_epochs}" for info in DATASETS.values())
    result = ArgumentParser(
        prog="python -m sweep.pretrain",
        description=(
            "Train a dense model with the project's standard recipe (SGD, Nesterov momentum "
            "0.9, weight decay 5e-4, warm-up + cosine schedule, crop/flip augmentation) on the "
            "train split minus its validation split, and write replicate --seed N as "
            "<checkpoints>/<dataset>/<arch>-seed<N>.pt plus its JSON sidecar. 224 px datasets "
            "fine-tune "
            "from torchvision's ImageNet weights when they are in torch's hub cache or can be "
            "downloaded, else train from scratch with a warning. An interrupted run resumes "
            "from its last finished epoch when rerun with the same arguments. Bad input prints "
            "one line on stderr, exits with code 2 and writes nothing."
        ),
    )
    result.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    result.add_argument("--arch", required=True, help=f"one of: {', '.join(ARCH_NAMES)}")
    result.add_argument(
        "--epochs", type=int, default=None, help=f"training epochs (default per dataset: {epochs})"
    )
    add_option_flags(result, LaunchOptions, only=("checkpoints", "data_root"))
    add_renamed_flag(result, "--out", "--checkpoints")
    result.add_argument("--batch-size", type=int, default=128, help="default: 128")
    result.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate (default {SCRATCH_LR} from scratch, {FINETUNE_LR} fine-tuning)",
    )
    result.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the replicate: seed of the initial weights, shuffling and augmentation (default: 0)",
    )
    result.add_argument(
        "--force", action="store_true", help="retrain even if the checkpoint exists"
    )
    result.add_argument(
        "--workers",
        type=int,
        default=0,
        help="DataLoader worker processes (default: 0)",
    )
    result.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)"
    )
    result.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: all cores; 1 is faster when other jobs share the cores)",
    )
    result.add_argument("--no-progress", action="store_true", help="no progress bar")
    return result


def run(args: argparse.Namespace) -> int:
    """Train; every argument is checked (by train_dense) before data is read or a file written."""
    try:
        train_dense(
            args.dataset,
            args.arch,
            epochs=args.epochs,
            out_dir=args.checkpoints,
            data_root=args.data_root,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            force=args.force,
            workers=args.workers,
            device=args.device,
            threads=args.threads,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:  # the resume file holds every finished epoch
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
