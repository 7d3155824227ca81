"""``python -m sweep.pretrain``: train the dense checkpoint that the sweep prunes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sweep.errors import cli_main
from sweep.tasks.data import DATASETS
from sweep.tasks.models import ARCHS
from sweep.tasks.train import DEFAULT_EPOCHS, FINETUNE_LR, SCRATCH_LR, train_dense


def parser() -> argparse.ArgumentParser:
    epochs = ", ".join(f"{name} {count}" for name, count in DEFAULT_EPOCHS.items())
    result = argparse.ArgumentParser(
        prog="python -m sweep.pretrain",
        description=(
            "Train a dense model with the project's standard recipe (SGD, Nesterov momentum "
            "0.9, weight decay 5e-4, warm-up + cosine schedule, crop/flip augmentation) and "
            "write <out>/<dataset>/<arch>.pt plus its JSON sidecar. 224 px datasets fine-tune "
            "from torchvision's ImageNet weights when they are in torch's hub cache or can be "
            "downloaded, else train from scratch with a warning. An interrupted run resumes "
            "from its last finished epoch when rerun with the same arguments."
        ),
    )
    result.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    result.add_argument("--arch", required=True, help=f"one of: {', '.join(ARCHS)}")
    result.add_argument(
        "--epochs", type=int, default=None, help=f"training epochs (default per dataset: {epochs})"
    )
    result.add_argument(
        "--out",
        type=Path,
        default=Path("checkpoints"),
        help="checkpoint folder (default: checkpoints)",
    )
    result.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="dataset files (default: ./data; fashion_mnist also looks in "
        "/usr/share/datasets/fashion-mnist)",
    )
    result.add_argument("--batch-size", type=int, default=128, help="default: 128")
    result.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate (default {SCRATCH_LR} from scratch, {FINETUNE_LR} fine-tuning)",
    )
    result.add_argument("--seed", type=int, default=0, help="init and shuffling seed (default: 0)")
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        train_dense(
            args.dataset,
            args.arch,
            epochs=args.epochs,
            out_dir=args.out,
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


if __name__ == "__main__":
    sys.exit(cli_main(main))
