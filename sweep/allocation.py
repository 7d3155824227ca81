"""``python -m sweep.allocation``: show how an allocation spreads a global sparsity over layers.

The allocation is the study's independent variable, so this prints exactly what the sweep would
prune (same code path: :func:`sweep.tasks.prune.prune`), for an architecture's default
initialisation or for any torchvision-compatible state_dict file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sweep.catalog.allocations import ALLOCATIONS
from sweep.catalog.archs import ARCH_NAMES, ARCHS
from sweep.core.arguments import ArgumentParser
from sweep.core.errors import CheckpointError, UserError, cli_main
from sweep.tasks.models import build_model, check_seed, load_state_dict_file
from sweep.tasks.prune import PruneReport, check_sparsity, prune

DESCRIPTION = """\
Print the kept weights per prunable layer (every Conv2d and Linear weight, in named_modules()
order) for one allocation at one global sparsity S. Every allocation keeps exactly
K = round((1 - S) * N) of the N prunable weights, and inside each layer the largest |w|
(ties to the lower flat index).

allocations:
  erk      density ~ (n_out + n_in + k_h + k_w) / (n_out * n_in * k_h * k_w); a layer whose
           density would exceed 1 is made dense (marked * in the table) and the rest re-solved
  lamp     global top-K of LAMP scores w^2 / (sum of w^2 of the weights at least as large);
           every layer keeps its largest weight when K >= number of layers
  uniform  every layer at sparsity S
  global   one |w| threshold over all layers
  uniform_plus
           Gale et al. (2019): the first conv dense, the classifier (last layer) at most 80 %
           sparse, every other layer at the one sparsity that makes the total exact; a
           sparsity too high for that is refused
Fractional per-layer quotas are rounded by largest remainder (ties to the earlier layer).

Without --checkpoint the weights are the architecture's default initialisation after
torch.manual_seed(--seed): ERK depends only on shapes, LAMP and global on the weights.
Bad input prints one line on stderr and exits with code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m sweep.allocation",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", required=True, help=f"one of: {', '.join(ARCH_NAMES)}")
    parser.add_argument("--num-classes", required=True, type=int, help="classifier outputs")
    parser.add_argument(
        "--input-size",
        required=True,
        type=int,
        help="square input side in px; <= 64 selects the small-image stem (3x3, no max-pool); "
        "He et al.'s CIFAR ResNets (resnet20/32/56) have only that one",
    )
    parser.add_argument("--in-channels", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--allocation", required=True, help=f"one of: {', '.join(ALLOCATIONS)}")
    parser.add_argument(
        "--sparsity", required=True, type=float, help="global sparsity S, 0 <= S < 1"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="plain state_dict file (torch.save of model.state_dict()); no sidecar needed",
    )
    parser.add_argument("--seed", type=int, default=0, help="init seed without --checkpoint")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Every argument error before any work."""
    ALLOCATIONS[args.allocation]  # UnknownNameError names the known ones
    check_sparsity(args.sparsity)
    info = ARCHS[args.arch]
    for flag in ("num_classes", "input_size", "in_channels"):
        if getattr(args, flag) < 1:
            raise UserError(
                f"--{flag.replace('_', '-')} {getattr(args, flag)} is not allowed; "
                "expected a positive integer"
            )
    info.check_image_size(args.input_size)
    check_seed(args.seed)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise CheckpointError(f"checkpoint {args.checkpoint} not found; expected a state_dict file")


def _describe(args: argparse.Namespace) -> str:
    return (
        f"{args.arch} with {args.num_classes} classes, {args.in_channels} input channels at "
        f"{args.input_size} px"
    )


def _load_weights(model: nn.Module, args: argparse.Namespace) -> None:
    """Load a state_dict file, naming the first key that does not fit the architecture."""
    state = load_state_dict_file(args.checkpoint)
    expected = model.state_dict()
    where = f"checkpoint {args.checkpoint} does not fit {_describe(args)}"
    for key, value in expected.items():
        if key not in state:
            raise CheckpointError(f"{where}: key {key!r} is missing")
        if state[key].shape != value.shape:
            raise CheckpointError(
                f"{where}: key {key!r} has shape {list(state[key].shape)}; "
                f"expected {list(value.shape)}"
            )
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise CheckpointError(f"{where}: unexpected key {unexpected[0]!r}")
    model.load_state_dict(state)


def format_table(report: PruneReport, title: str) -> str:
    """The report for people: one row per layer, forced-dense layers marked with '*'."""
    kept = sum(layer.kept for layer in report.layers)
    numel = sum(layer.numel for layer in report.layers)
    width = max(len("layer"), *(len(layer.name) for layer in report.layers))
    lines = [
        f"{report.allocation} allocation of {title}",
        f"requested sparsity {report.requested_sparsity:.6f}, achieved "
        f"{report.achieved_sparsity:.6f}: {kept:,} of {numel:,} prunable weights kept",
        "",
        f"{'layer':<{width}}  {'shape':<16} {'numel':>11} {'kept':>11} {'density':>8}",
    ]
    forced = set(report.forced_dense)
    for layer in report.layers:
        shape = "x".join(map(str, layer.shape))
        mark = " *" if layer.name in forced else ""
        lines.append(
            f"{layer.name:<{width}}  {shape:<16} {layer.numel:>11,} {layer.kept:>11,} "
            f"{layer.density:>8.4f}{mark}"
        )
    if forced:
        lines += ["", "* forced dense: ERK density capped at 1, the budget re-solved without it"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    torch.manual_seed(args.seed)
    model = build_model(args.arch, args.num_classes, args.in_channels, args.input_size)
    if args.checkpoint is not None:
        _load_weights(model, args)
    report = prune(model, args.allocation, args.sparsity)
    if args.format == "json":
        print(json.dumps(report.to_dict()))
    else:
        print(format_table(report, _describe(args)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
