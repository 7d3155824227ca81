"""Fashion-MNIST results table: allocation x sparsity x label-free repair, mean ± std over seeds.

    .venv/bin/python bench/fashion_mnist_table.py --eval-limit 5000

Prunes the demo checkpoint once per (allocation, sparsity) and shares the masks across every
repair; `none` is evaluated once, every other method with each calibration seed. Dense statistics
(one per seed) and dense eval logits are computed once. Finished trials are appended to a JSONL
file under --cache-dir, so an interrupted run resumes where it stopped. Writes the markdown table
to --out (docs/results/fashion_mnist.md).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from sweep.errors import cli_main
from sweep.tasks import data
from sweep.tasks.evaluate import evaluate, metrics_from_logits, predict_logits
from sweep.tasks.models import load_checkpoint
from sweep.tasks.prune import prune
from sweep.tasks.repair import RECAL_AFTER_DEFAULT, REPAIRS, dense_statistics, repair, repair_params

SPARSITIES = (0.70, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.98)
STAT_METHODS = ("layer_var", "channel_var", "channel_var_shrink")
# ResNet-20, dense 92.1 %, 1024 calibration images, 3 seeds (the planning measurement):
# (allocation, sparsity) -> (bn_recal, per-channel correction after it), top-1 %.
PLANNING = {
    ("erk", 0.90): (70.8, 77.5),
    ("lamp", 0.90): (64.7, 73.1),
    ("erk", 0.94): (33.9, 38.9),
    ("lamp", 0.94): (39.1, 44.5),
}


def _trial_key(**config: object) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:24]


class TrialLog:
    """Finished trials, appended one JSON line each, keyed by their configuration."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[row["key"]] = row

    def add(self, row: dict) -> None:
        self.rows[row["key"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def _variants(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """Non-default parameters measured at the study sparsities: the other recal_after setting
    for each activation method, corrections at the hidden points or at the logits only, and
    other shrinkage strengths."""
    flip = {"recal_after": not RECAL_AFTER_DEFAULT}
    return (
        [(m, flip) for m in STAT_METHODS]
        + [("channel_var", {"points": points}) for points in ("hidden", "logits")]
        + [("channel_var_shrink", {"tau": tau}) for tau in args.shrink_taus]
    )


def _effective(method: str, params: dict | None = None) -> dict:
    """All parameters of a run, defaults included: a changed default is a different trial."""
    return dataclasses.asdict(repair_params(method, **(params or {})))


def _changed(method: str, params: dict) -> str:
    default = _effective(method)
    return " ".join(f"{k}={v}" for k, v in params.items() if default[k] != v)


def _trials(args: argparse.Namespace) -> list[dict]:
    """Every (allocation, sparsity, method, seed, effective params) to run, in run order."""
    trials = []
    for allocation in args.allocations:
        for sparsity in args.sparsities:
            at = {"allocation": allocation, "sparsity": sparsity, "calib": args.calib_size}
            trials.append({**at, "method": "none", "seed": None, "params": {}})
            runs = [(m, None) for m in REPAIRS[1:]]
            if sparsity in args.study_sparsities:
                runs += _variants(args)
            for seed in args.seeds:
                trials += [
                    {**at, "method": m, "seed": seed, "params": _effective(m, p)} for m, p in runs
                ]
    unique = {_trial_key(**trial): trial for trial in trials}
    return list(unique.values())


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def _top1(rows: list[dict], method: str, params: dict | None = None) -> list[float]:
    """top-1 of the rows of `method` run with `params` (others at their defaults)."""
    wanted = _effective(method, params)
    return [r["metrics"]["top1"] for r in rows if r["method"] == method and r["params"] == wanted]


def _at(rows: list[dict], allocation: str, sparsity: float) -> list[dict]:
    return [r for r in rows if r["allocation"] == allocation and r["sparsity"] == sparsity]


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _summary(
    args: argparse.Namespace, rows: list[dict], dense_top1: float, setup_classes: int
) -> list[str]:
    """Per allocation: where activation repair beats bn_recal, and how far each method keeps
    half of the dense accuracy above chance (r >= 0.5, chance = 1 / classes)."""
    chance = 1 / setup_classes
    lines = []
    for allocation in args.allocations:
        wins, best = [], (0.0, None, None)
        last_ok: dict[str, float] = {}
        for sparsity in args.sparsities:
            base = _at(rows, allocation, sparsity)
            means = {m: _mean(_top1(base, m)) for m in REPAIRS}
            for method, mean in means.items():
                if mean is not None and (mean - chance) / (dense_top1 - chance) >= 0.5:
                    last_ok[method] = sparsity
            bn = means["bn_recal"]
            stat = {m: means[m] for m in STAT_METHODS if means[m] is not None}
            if bn is None or not stat:
                continue
            method = max(stat, key=stat.get)
            gain = stat[method] - bn
            if gain > 0.01:
                wins.append(f"{sparsity:.2f}")
            if gain > best[0]:
                best = (gain, sparsity, method)
        text = f"- **{allocation}**: activation repair beats bn_recal by more than 1 point at "
        text += ", ".join(wins) if wins else "no sparsity"
        if best[1] is not None:
            text += f"; largest gain {100 * best[0]:+.1f} points at {best[1]:.2f} ({best[2]})"
        kept = ", ".join(f"{m} {s:.2f}" for m, s in last_ok.items())
        lines.append(f"{text}. Highest sparsity with r >= 0.5: {kept or 'none'}.")
    return lines


def _markdown(args, rows, setup: dict) -> str:
    lines = [
        "# Fashion-MNIST: label-free repair after unstructured pruning",
        "",
        "Generated by",
        "",
        f"    {setup['command']}",
        "",
        f"Setup: {setup['arch']} checkpoint `{setup['checkpoint']}` (sha256 {setup['sha'][:12]}…), "
        f"dense top-1 {100 * setup['dense_top1']:.2f} % on the {setup['eval_images']} eval images "
        f"used here ({setup['eval_note']}; sidecar: {setup['meta_top1']}). Calibration: "
        f"{args.calib_size} train images per seed, seeds {', '.join(map(str, args.seeds))}, "
        "test-time preprocessing, no labels. Cells: top-1 % on the eval images, mean ± std over "
        "the calibration seeds (`none` does not depend on the seed: one value). Repair defaults: "
        f"{setup['defaults']}. {setup['runtime']}",
        "",
        "Methods (`sweep/tasks/repair.py`): `none` keeps the dense BatchNorm statistics; "
        "`bn_recal` refits every BatchNorm's running statistics on the calibration images. The "
        "activation methods run bn_recal, then correct the residual block outputs (after the add "
        "and ReLU) and the logits in forward order, so that the pruned model's statistics there "
        "match the dense model's: `layer_var` with one scale and shift per point, `channel_var` "
        "per channel (gain g = dense std / pruned std, mean matched), `channel_var_shrink` per "
        "channel with each gain pulled toward its point's pooled gain G where the channel kept "
        "less of its signal than the point did: r = G / g, gain = G (1 + (r - r²) / (r² + tau²)), "
        "clamped to [gain_min, gain_max]; a silenced channel gets G instead of an exploding gain. "
        "Variant `points=logits` corrects only the logits, `points=hidden` all points but them.",
        "",
    ]
    for allocation in args.allocations:
        lines += [f"## {allocation}", ""]
        header = ["sparsity (achieved)", "dense", *REPAIRS]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for sparsity in args.sparsities:
            chosen = _at(rows, allocation, sparsity)
            if not chosen:
                continue
            achieved = chosen[0]["achieved"]
            cells = [f"{sparsity:.2f} ({achieved:.4f})", f"{100 * setup['dense_top1']:.1f}"]
            cells += [_cell(_top1(chosen, method=m)) for m in REPAIRS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Summary", "", *_summary(args, rows, setup["dense_top1"], setup["classes"]), ""]
    lines += [
        "## Parameter variants (recal_after: a second BatchNorm recalibration after the "
        "corrections; tau: shrinkage strength)",
        "",
        "| allocation | sparsity | method | variant | default | variant top-1 | difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for allocation in args.allocations:
        for sparsity in args.study_sparsities:
            base = _at(rows, allocation, sparsity)
            for method, params in _variants(args):
                default, other = _top1(base, method), _top1(base, method, params)
                if default and other:
                    diff = statistics.mean(other) - statistics.mean(default)
                    variant = ", ".join(f"{k}={v}" for k, v in params.items())
                    lines.append(
                        f"| {allocation} | {sparsity:.2f} | {method} | {variant} | "
                        f"{_cell(default)} | {_cell(other)} | {100 * diff:+.1f} points |"
                    )
    lines += ["", "## Against the planning measurement (issue 4)", ""]
    lines += [
        "| allocation | sparsity | bn_recal (planning) | bn_recal (here) | "
        "per-channel (planning) | channel_var (here) | channel_var_shrink (here) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (allocation, sparsity), (bn, channel) in PLANNING.items():
        base = _at(rows, allocation, sparsity)
        lines.append(
            f"| {allocation} | {sparsity:.2f} | {bn} | {_cell(_top1(base, method='bn_recal'))} | "
            f"{channel} | {_cell(_top1(base, method='channel_var'))} | "
            f"{_cell(_top1(base, method='channel_var_shrink'))} |"
        )
    return "\n".join(lines) + "\n"


def _dense_logits(dense, eval_set, device: torch.device, path: Path) -> torch.Tensor:
    """The dense model's eval logits, computed once and kept next to the trial log."""
    if path.is_file():
        return torch.load(path, weights_only=True)
    logits = predict_logits(dense.to(device), eval_set, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(logits, path)
    return logits


def _run_trials(args, todo: list[dict], dense, meta, eval_set, dense_logits, log) -> None:
    """Run the trials not yet in the log; masks and dense statistics are shared across them."""
    device = torch.device(args.device)
    machine = str(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    dense.to(device)
    calibrations, stats = {}, {}
    pruned_cache: tuple[tuple, torch.nn.Module, float] | None = None
    started = time.perf_counter()
    for index, trial in enumerate(todo, 1):
        trial_start = time.perf_counter()
        seed = trial["seed"]
        if seed is not None and seed not in calibrations:
            calibrations[seed] = data.calibration_set(
                meta.dataset, args.calib_size, seed, data_root=args.data_root
            )
            stats[seed] = dense_statistics(dense, calibrations[seed])
        where = (trial["allocation"], trial["sparsity"])
        if pruned_cache is None or pruned_cache[0] != where:  # masks shared across repairs
            pruned = copy.deepcopy(dense)
            report = prune(pruned, *where)
            pruned_cache = (where, pruned, report.achieved_sparsity)
        _, pruned, achieved = pruned_cache
        params = trial["params"]
        model = pruned
        if trial["method"] != "none":
            calibration = calibrations[seed]
            model = repair(pruned, trial["method"], calibration, dense_stats=stats[seed], **params)
        metrics = evaluate(model, eval_set, dense_logits=dense_logits, device=device)
        log.add(
            {
                "key": _trial_key(**trial),
                **trial,
                "achieved": achieved,
                "metrics": metrics.to_dict(),
                "device": machine,
                "torch": torch.__version__,
                "seconds": round(time.perf_counter() - trial_start, 3),
            }
        )
        elapsed = time.perf_counter() - started
        print(
            f"[{index}/{len(todo)}] {trial['allocation']} {trial['sparsity']:.2f} "
            f"{trial['method']} seed={seed} {_changed(trial['method'], params)} "
            f"top1={metrics.top1:.4f} "
            f"({elapsed / 60:.1f} min, ~{elapsed / index * (len(todo) - index) / 60:.1f} min left)",
            flush=True,
        )


def _setup(args, meta, eval_set, dense_top1: float, rows: list[dict]) -> dict:
    """What the markdown says about how the table was made."""
    limit_note = (
        f"the first {args.eval_limit} of a fixed seed-0 shuffle of the 10 000 test images"
        if args.eval_limit
        else "the full test split"
    )
    machines = sorted({f"{row['device']} (torch {row['torch']})" for row in rows})
    minutes = sum(row["seconds"] for row in rows) / 60
    return {
        "command": " ".join([".venv/bin/python bench/fashion_mnist_table.py", *args.argv]),
        "arch": meta.arch,
        "classes": meta.num_classes,
        "checkpoint": str(args.checkpoint),
        "sha": meta.sha256,
        "dense_top1": dense_top1,
        "meta_top1": (
            f"{100 * meta.dense_top1:.2f} % on the full test split"
            if meta.dense_top1 is not None
            else "no dense top-1 recorded"
        ),
        "eval_images": len(eval_set),
        "eval_note": limit_note,
        "defaults": "; ".join(f"{m}: {repair_params(m)}" for m in STAT_METHODS),
        "runtime": (
            f"Trials ran on {', '.join(machines)}: {minutes:.1f} min in all "
            f"({platform.machine()}, rendered {datetime.now(UTC).date()})."
        ),
    }


NOTES_MARKER = "<!-- notes below this line are written by hand and kept on regeneration -->"


def _kept_notes(path: Path) -> str:
    """The hand-written part of an existing results file (from the marker on)."""
    text = path.read_text() if path.is_file() else ""
    notes = text[text.index(NOTES_MARKER) :] if NOTES_MARKER in text else NOTES_MARKER + "\n"
    return "\n" + notes


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    dense, meta = load_checkpoint(args.checkpoint)
    eval_set = data.eval_set(meta.dataset, data_root=args.data_root, limit=args.eval_limit)
    tag = f"{meta.sha256[:12]}-{eval_set.key[:12]}-{args.device}"
    log = TrialLog(args.cache_dir / f"trials-{tag}.jsonl")
    logits_path = args.cache_dir / f"dense-logits-{tag}.pt"
    dense_logits = _dense_logits(dense, eval_set, torch.device(args.device), logits_path)
    dense_top1 = metrics_from_logits(dense_logits, torch.from_numpy(eval_set.labels)).top1
    print(f"dense top-1 {dense_top1:.4f} on {len(eval_set)} eval images; log {log.path}")
    trials = _trials(args)
    todo = [t for t in trials if _trial_key(**t) not in log.rows]
    print(f"{len(trials)} trials, {len(todo)} to run")
    if todo:
        _run_trials(args, todo, dense, meta, eval_set, dense_logits, log)
    wanted = {_trial_key(**t) for t in trials}
    rows = [row for key, row in log.rows.items() if key in wanted]
    table = _markdown(args, rows, _setup(args, meta, eval_set, dense_top1, rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + _kept_notes(args.out))
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=Path("checkpoints/fashion_mnist/resnet20.pt")
    )
    parser.add_argument("--allocations", nargs="+", default=["erk", "lamp", "global"])
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    parser.add_argument("--study-sparsities", nargs="*", type=float, default=[0.90, 0.95])
    parser.add_argument("--shrink-taus", nargs="*", type=float, default=[0.1, 0.5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--calib-size", type=int, default=1024)
    parser.add_argument("--eval-limit", type=int, default=None, help="eval images (default: all)")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(".cache/prune-sweep/fashion_mnist_table")
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results/fashion_mnist.md"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
