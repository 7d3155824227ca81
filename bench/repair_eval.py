"""Cost of label-free repair and of evaluation on a demo model, as ratios to bare forward passes.

    .venv/bin/python bench/repair_eval.py [--checkpoint checkpoints/fashion_mnist/resnet20-seed0.pt]

Uses the trained Fashion-MNIST demo checkpoint when present (else a randomly initialised ResNet-20
on random images, with a warning). Prints one line per measurement, then a last JSON line:
calib_passes (forward passes over the calibration set per channel_var_shrink repair with cached
dense statistics, counted inside the forward driver), repair_over_forward (repair time / one bare
calibration forward pass) and eval_over_forward (evaluate() time / a bare forward loop over the
same eval images, normalised and already on the device); medians over --runs paired runs.

Then one row per repair method (--methods; dense model given, no cached statistics, so every pass
is counted): calibration passes counted by the pass driver (a layer-wise method's dense pass, and
its pruned-prefix pass per layer, count once each), model passes (forward calls of the dense and
pruned models over the whole calibration set, a call stopped at a layer included, divided by the
number of batches), backward passes (autograd backward calls: adaprune's per-layer gradients are
closed-form, so 0), and the repair's seconds and peak memory above the starting point, each over
one bare calibration forward pass's (median of --runs). Without a checkpoint --arch picks the
random model (e.g. resnet50 --image-size 32 --calib-size 16 for a short run). The last line is
the JSON of everything.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from sweep.core import paths
from sweep.core.errors import UserError, cli_main
from sweep.tasks import data
from sweep.tasks.evaluate import EVAL_BATCH_SIZE, TensorEvalSet, evaluate, predict_logits
from sweep.tasks.models import build_model, load_checkpoint
from sweep.tasks.prune import prune
from sweep.tasks.repair import (
    REPAIR_METHODS,
    REPAIRS,
    count_calibration_passes,
    dense_statistics,
    repair,
)

METHOD = "channel_var_shrink"


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _median_ratio(
    measured: Callable[[], object], baseline: Callable[[], object], runs: int
) -> tuple[float, float, float]:
    """Median of per-run time ratios, each run timing both back to back (the CPU is shared, so
    drifting load hits both sides of a ratio alike), plus the median times themselves."""
    pairs = [(_seconds(measured), _seconds(baseline)) for _ in range(runs)]
    ratio = statistics.median(m / b for m, b in pairs)
    return ratio, statistics.median(m for m, _ in pairs), statistics.median(b for _, b in pairs)


@contextmanager
def _peak_memory(device: torch.device) -> Iterator[list[int]]:
    """Peak bytes above the starting point inside the block: CUDA allocator peak on a GPU, else
    the process's resident set sampled every millisecond (torch's CPU allocations are not
    visible to tracemalloc)."""
    result = [0]
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        yield result
        torch.cuda.synchronize()
        result[0] = torch.cuda.max_memory_allocated() - start
        return
    page = 4096

    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page

    start, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result[0] = max(peak[0], rss()) - start


@contextmanager
def _count_calls(models: list[torch.nn.Module]) -> Iterator[list[int]]:
    """Forward calls of `models` (and of deep copies made inside), and autograd backward calls."""
    calls = [0, 0]
    handles = [
        model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        for model in models
    ]
    backward = torch.autograd.backward

    def counted(*args, **kwargs):
        calls[1] += 1
        return backward(*args, **kwargs)

    torch.autograd.backward = counted
    try:
        yield calls
    finally:
        torch.autograd.backward = backward
        for handle in handles:
            handle.remove()


def method_rows(
    methods: list[str],
    dense: torch.nn.Module,
    pruned: torch.nn.Module,
    calibration: object,
    forward: Callable[[], None],
    device: torch.device,
    runs: int,
) -> dict[str, dict[str, float]]:
    """Per method: passes, backward calls, seconds and peak memory over one bare forward's."""
    with _peak_memory(device) as forward_peak:
        forward()
    rows = {}
    batches = sum(1 for _ in calibration)
    for method in methods:
        run = functools.partial(repair, pruned, method, calibration, dense=dense)
        with count_calibration_passes() as counter, _count_calls([dense, pruned]) as calls:
            run()
        with _peak_memory(device) as peak:
            run()
        ratio, seconds, _ = _median_ratio(run, forward, runs)
        rows[method] = {
            "calib_passes": counter.passes,
            "model_passes": round(calls[0] / batches, 2),
            "backward_passes": calls[1],
            "seconds": round(seconds, 3),
            "time_over_forward": round(ratio, 2),
            "peak_mb": round(peak[0] / 2**20, 1),
            "memory_over_forward": round(peak[0] / max(forward_peak[0], 1), 2),
        }
        print(f"{method}: {json.dumps(rows[method])}")
    return rows


def _demo(args: argparse.Namespace) -> tuple[torch.nn.Module, object, object]:
    """(dense model, calibration, eval set): real demo data where available, else random."""
    if args.checkpoint.is_file():
        model, meta = load_checkpoint(args.checkpoint)
        print(f"model: {meta.arch} on {meta.dataset} from {args.checkpoint}")
        try:
            root = args.data_root
            calibration = data.calibration_set(meta.dataset, args.calib_size, 0, data_root=root)
            eval_set = data.eval_set(meta.dataset, data_root=root, limit=args.eval_limit)
            return model, calibration, eval_set
        except UserError as error:
            print(f"warning: {error}; using random images", file=sys.stderr)
    else:
        print(
            f"warning: {args.checkpoint} not found; benchmarking a randomly initialised "
            f"{args.arch} on random images",
            file=sys.stderr,
        )
        model = build_model(args.arch, 10, in_channels=1, image_size=args.image_size).eval()
    generator = torch.Generator().manual_seed(0)
    shape = (1, args.image_size, args.image_size)
    calibration = list(torch.randn(args.calib_size, *shape, generator=generator).split(256))
    images = torch.randn(args.eval_limit, *shape, generator=generator)
    return model, calibration, TensorEvalSet(images, torch.randint(0, 10, (args.eval_limit,)))


def run(args: argparse.Namespace) -> int:
    for method in args.methods.split(","):
        REPAIR_METHODS[method]  # an unknown name fails now, not after the first measurements
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dense, calibration, eval_set = _demo(args)
    dense.to(device)
    pruned = copy.deepcopy(dense)
    prune(pruned, args.allocation, args.sparsity)
    calib_tensors = [batch.to(device) for batch in calibration]  # the baselines' tensors are
    # already on the device: they time the forward alone
    eval_tensors = [images.to(device) for images, _ in eval_set.batches(EVAL_BATCH_SIZE)]
    print(
        f"pruned: {args.allocation} {args.sparsity}; calibration {sum(map(len, calib_tensors))} "
        f"images, eval {sum(map(len, eval_tensors))} images, {device}, "
        f"{torch.get_num_threads()} threads"
    )

    def bare_loop(model: torch.nn.Module, tensors: list[torch.Tensor]) -> None:
        with torch.inference_mode():
            for batch in tensors:
                model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    stats = dense_statistics(dense, calibration)
    seconds = time.perf_counter() - start
    print(f"dense statistics (once per checkpoint x calibration set): {seconds:.3f} s")
    dense_logits = predict_logits(dense, eval_set, device=device)

    with count_calibration_passes() as counter:
        repaired = repair(pruned, METHOD, calibration, dense_stats=stats)
    print(f"calibration passes per {METHOD} repair (counted): {counter.passes}")
    bare_loop(pruned, calib_tensors)  # warm-up
    repair_ratio, repair_time, forward = _median_ratio(
        lambda: repair(pruned, METHOD, calibration, dense_stats=stats),
        lambda: bare_loop(pruned, calib_tensors),
        args.runs,
    )
    print(f"calibration forward pass: {forward:.3f} s; {METHOD} repair: {repair_time:.3f} s")

    def evaluation(compile: bool = False) -> None:
        evaluate(repaired, eval_set, dense_logits=dense_logits, device=args.device, compile=compile)

    bare_loop(repaired, eval_tensors)  # warm-up
    eval_ratio, eval_time, bare_eval = _median_ratio(
        evaluation, lambda: bare_loop(repaired, eval_tensors), args.runs
    )
    metrics = evaluate(repaired, eval_set, dense_logits=dense_logits, device=device)
    print(f"bare eval forward loop: {bare_eval:.3f} s; evaluate(): {eval_time:.3f} s")
    print(f"repaired metrics: {json.dumps(metrics.to_dict())}")
    if args.compile:
        first = _seconds(lambda: evaluation(compile=True))
        compiled = statistics.median(_seconds(lambda: evaluation(True)) for _ in range(args.runs))
        print(
            f"torch.compile: first evaluate {first:.1f} s (compile ~{first - compiled:.1f} s), "
            f"then {compiled:.3f} s per evaluate ({eval_time / compiled:.2f}x faster than eager)"
        )
    methods = method_rows(
        args.methods.split(","),
        dense,
        pruned,
        calibration,
        lambda: bare_loop(pruned, calib_tensors),
        device,
        args.runs,
    )
    result = {
        "calib_passes": counter.passes,
        "repair_over_forward": round(repair_ratio, 3),
        "eval_over_forward": round(eval_ratio, 3),
        "methods": methods,
    }
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=paths.checkpoint_file(paths.CHECKPOINTS, "fashion_mnist", "resnet20", 0),
    )
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--allocation", default="erk")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--calib-size", type=int, default=1024)
    parser.add_argument("--eval-limit", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--methods", default=",".join(REPAIRS), help="comma-separated methods")
    parser.add_argument("--arch", default="resnet20", help="random model without a checkpoint")
    parser.add_argument("--image-size", type=int, default=28, help="random model's input size")
    args = parser.parse_args(argv)
    return cli_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
