"""Helper of bench/gpu_check.sh: the demo grid through the launcher and through the in-process loop.

`all` (what gpu_check.sh runs), in a work directory of its own:

1. dense checkpoints: the trained demo replicates from --checkpoints (default checkpoints/) when
   all three are there and pass the launcher's own checks, copied into the work directory;
   otherwise three random-weight ResNet-20 replicates (seeded 0, 1, 2) written there;
2. caches: the demo's eval set (2000 test images) and calibration sets (512 images, seeds 0 and
   1) are decoded once into a shared cache, which each run gets a copy of. Decoding is a one-off
   preparation step, so neither run pays for it; every artefact the trials compute (dense logits,
   masks, dense statistics) starts cold in both, as in a fresh sweep;
3. the demo grid (sweep.plan.grid.DEMO as it is: 405 points, 81 cells) through
   `python -m sweep.launch`, with `--gpus-per-trial 0.125` where `nvidia-smi` and CUDA exist (bf16
   eval), else on CPU with the grid's own resources (fp32 eval), while the device's busy fraction
   is sampled (nvidia-smi utilization.gpu every second, or the CPU busy fraction of the whole
   machine from /proc/stat);
4. the same points (same keys: same precision) through `sweep.run.trial.run_in_process`, in a fresh
   Python process, into a separate store, sampled the same way;
5. points/s of both (by wall clock, interpreter start to exit, and from the first to the last
   row), the ratio launcher / loop of the wall times, each run's busy fraction, the stages by
   repair, and bf16 autocast against fp32 top-1 of replicate 0 (dense and ERK 90 %).

Without Ray, step 3 is skipped and only the loop runs. `loop` is step 4's subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from launcher_env import launcher_env

from sweep.core import paths

if TYPE_CHECKING:
    from sweep.plan.grid import Grid

ROOT = Path(__file__).resolve().parent.parent
GPUS_PER_TRIAL = 0.125


def log(text: str) -> None:
    print(text, flush=True)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --- preparation ------------------------------------------------------------------------------


def prepare_checkpoints(source: Path, target: Path) -> str:
    """Trained replicates copied from `source` when all pass verification, else random ones."""
    import torch

    from sweep.core.errors import UserError
    from sweep.plan.grid import DEMO, checkpoints_needed
    from sweep.tasks import models
    from sweep.tasks.datasets.holdout import holdout

    needed = checkpoints_needed(DEMO)
    reason = None
    for dataset, arch, replicate in needed:
        path = paths.checkpoint_file(source, dataset, arch, replicate)
        if not path.exists():
            reason = f"{path} is missing"
            break
        try:
            models.verify_checkpoint(path, dataset, arch, replicate)
        except UserError as error:
            reason = str(error)
            break
    if reason is None:
        for dataset, arch, replicate in needed:
            path = paths.checkpoint_file(source, dataset, arch, replicate)
            copy = paths.checkpoint_file(target, dataset, arch, replicate)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
            shutil.copy2(models.sidecar_path(path), models.sidecar_path(copy))
        return f"trained (copied from {source})"
    for dataset, arch, replicate in needed:
        torch.manual_seed(replicate)
        model = models.build_model(arch, num_classes=10, in_channels=1, image_size=28)
        meta = models.CheckpointMeta(
            arch=arch, dataset=dataset, num_classes=10, in_channels=1, image_size=28,
            seed=replicate, held_out=holdout(dataset, 60000).record(),
        )  # fmt: skip
        path = paths.checkpoint_file(target, dataset, arch, replicate)
        models.save_checkpoint(model, path, meta)
    return f"random weights ({reason})"


def write_grid(path: Path, quick: bool) -> Path:
    """The demo grid's own fields as a grid file; `quick`: replicate 0 and two sparsities only
    (30 points, for trying the script out)."""
    import yaml

    from sweep.plan.grid import DEMO

    grid = {
        "name": DEMO.name,
        "pairs": [list(pair) for pair in DEMO.pairs],
        "allocations": list(DEMO.allocations),
        "sparsities": [0.9, 0.98] if quick else list(DEMO.sparsities),
        "repairs": [
            {"method": r.method, "params": r.params_dict} if r.params else r.method
            for r in DEMO.repairs
        ],
        "seeds": list(DEMO.seeds),
        "replicates": [0] if quick else list(DEMO.replicates),
        "calib_size": DEMO.calib_size,
        "eval_limit": DEMO.eval_limit,
        "eval_split": DEMO.eval_split,
        "resources": dict(DEMO.resources),
    }
    path.write_text(yaml.safe_dump(grid, default_flow_style=None))
    return path


def prepare_caches(work: Path, grid: Grid) -> tuple[Path, Path]:
    """Decode the grid's eval and calibration sets once; one copy of that cache per run."""
    from sweep.tasks import data

    shared = work / "cache-shared"
    for dataset in grid.datasets:
        data.eval_set(dataset, None, shared, limit=grid.eval_limit, split=grid.eval_split)
        for seed in grid.seeds:
            data.calibration_set(dataset, grid.calib_size, seed, None, shared)
    copies = work / "cache-launcher", work / "cache-loop"
    for copy in copies:
        shutil.copytree(shared, copy)
    return copies


# --- measuring --------------------------------------------------------------------------------


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # user … steal; guest time is already counted in user
    return total - idle, total


class BusySampler:
    """The device's busy fraction while a block runs: the mean of nvidia-smi's utilization.gpu
    (all GPUs, one sample a second), or on CPU the busy share of all cores from /proc/stat (the
    whole machine: other processes count too)."""

    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu
        self.samples: list[float] = []
        self.fraction: float | None = None

    @property
    def label(self) -> str:
        if self.gpu:
            return "GPU busy fraction (nvidia-smi utilization.gpu, mean of 1 s samples)"
        return "CPU busy fraction (all cores, whole machine, /proc/stat)"

    def __enter__(self) -> BusySampler:
        if self.gpu:
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-l", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        else:
            self.start = _cpu_jiffies()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.strip()) / 100)

    def __exit__(self, *exc: object) -> None:
        if self.gpu:
            self.process.terminate()
            self.process.wait()
            self.reader.join(timeout=5)
            self.fraction = sum(self.samples) / len(self.samples) if self.samples else None
        else:
            busy, total = _cpu_jiffies()
            self.fraction = (busy - self.start[0]) / max(1, total - self.start[1])


def timed_run(command: list[str], log_path: Path, gpu: bool) -> tuple[float, BusySampler]:
    """Wall seconds of a subprocess (output to `log_path`) and the busy fraction while it ran."""
    log("$ " + " ".join(command))
    env = launcher_env()
    with open(log_path, "w") as handle, BusySampler(gpu) as sampler:
        start = time.perf_counter()
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
    if code.returncode != 0:
        print(log_path.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"{command[1:3]} exited with {code.returncode}; log: {log_path}")
    return seconds, sampler


def store_summary(out: Path) -> dict:
    from sweep.results.store import read_results

    frame = read_results(out)
    finished = frame["finished_at"].sort_values()
    span = (finished.iloc[-1] - finished.iloc[0]).total_seconds()
    return {
        "frame": frame,
        "keys": set(frame["trial_key"]),
        "ok": int((frame["status"] == "ok").sum()),
        "rows_per_s": (len(frame) - 1) / span if span > 0 else None,
    }


def precision_check(checkpoints: Path, cache: Path, device_name: str) -> dict:
    """bf16 autocast against fp32 top-1 on the demo's eval set: replicate 0, dense and ERK 90 %."""
    import copy

    import torch

    from sweep.plan.grid import DEMO
    from sweep.tasks import data, evaluate, models, prune

    device = torch.device(device_name)
    dataset, arch = DEMO.pairs[0]
    model, _ = models.load_checkpoint(
        paths.checkpoint_file(checkpoints, dataset, arch, 0), arch=arch, dataset=dataset
    )
    eval_set = data.eval_set(dataset, None, cache, limit=DEMO.eval_limit, split=DEMO.eval_split)
    labels = torch.as_tensor(eval_set.labels)
    sparse = copy.deepcopy(model)
    prune.apply_masks(sparse, prune.prune(copy.deepcopy(model), "erk", 0.9).masks)
    result = {}
    for name, net in (("dense", model), ("erk_0.9", sparse)):
        net = net.to(device).eval()
        logits = {
            p: evaluate.predict_logits(net, eval_set, device=device, precision=p)
            for p in ("fp32", "bf16")
        }
        top1 = {p: (v.argmax(1) == labels).float().mean().item() for p, v in logits.items()}
        agree = (logits["fp32"].argmax(1) == logits["bf16"].argmax(1)).float().mean().item()
        result[name] = {
            "top1_fp32": round(top1["fp32"], 4),
            "top1_bf16": round(top1["bf16"], 4),
            "bf16_minus_fp32": round(top1["bf16"] - top1["fp32"], 4),
            "agreement": round(agree, 4),
        }
    return result


# --- the steps --------------------------------------------------------------------------------


def loop(args: argparse.Namespace) -> None:
    """Step 4, in its own process: the demo grid's points through run_in_process."""
    from sweep.plan.grid import checkpoints_needed, expand, load_grid
    from sweep.results.store import ResultStore
    from sweep.run.trial import TrialContext, run_in_process
    from sweep.tasks import models

    grid = load_grid(str(args.grid))
    digests = {
        needed: models.read_meta(paths.checkpoint_file(args.checkpoints, *needed)).sha256
        for needed in checkpoints_needed(grid)
    }
    trials = expand(grid, digests, args.precision)
    context = TrialContext(args.checkpoints.resolve(), None, args.cache.resolve(), grid.name)
    store = ResultStore(args.store)
    run_in_process(trials, context, store)
    store.compact()  # as the launcher does at its end


def run_all(args: argparse.Namespace) -> None:
    import torch

    from sweep.plan.cells import group_cells
    from sweep.plan.grid import expand, load_grid

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["PRUNE_SWEEP_CACHE"] = str(work / "cache-default")  # nothing reads ~/.cache
    has_smi = shutil.which("nvidia-smi") is not None
    gpu = has_smi and torch.cuda.is_available()
    if has_smi and not gpu:
        log("nvidia-smi is here but torch sees no CUDA device: running on CPU")
    has_ray = importlib.util.find_spec("ray") is not None
    precision = "bf16" if gpu else "fp32"
    device = torch.cuda.get_device_name(0) if gpu else f"cpu ({os.cpu_count()} cores)"
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    log(f"device: {device}; work directory {work}; load average {load}")

    checkpoints = work / "checkpoints"
    weights = prepare_checkpoints(args.checkpoints.resolve(), checkpoints)
    log(f"checkpoints: {weights}")
    grid_path = write_grid(work / "demo.yaml", args.quick)
    grid = load_grid(str(grid_path))
    cache_launcher, cache_loop = prepare_caches(work, grid)
    points = len(expand(grid, {}))
    cells = len(group_cells(expand(grid, {})))
    log(f"grid: {points} points in {cells} cells{' (--quick)' if args.quick else ''}")

    result: dict = {"device": device, "weights": weights.split(" ")[0], "points": points}
    launcher_s = None
    if has_ray:
        command = [
            sys.executable, "-m", "sweep.launch", "--grid", str(grid_path),
            "--store", str(work / "launcher"), "--checkpoints", str(checkpoints),
            "--cache-dir", str(cache_launcher), "--eval-precision", precision,
        ]  # fmt: skip
        if gpu:
            command += ["--gpus-per-trial", str(GPUS_PER_TRIAL)]
        launcher_s, busy = timed_run(command, work / "launcher.log", gpu)
        summary = store_summary(work / "launcher")
        frame = summary["frame"]
        log(
            f"launcher: {len(frame)} rows ({summary['ok']} ok) in {launcher_s:.1f} s: "
            f"{points / launcher_s:.2f} points/s ({summary['rows_per_s']:.2f} from the first to "
            f"the last row); {busy.label}: {busy.fraction:.2f}"
        )
        log(
            f"  devices {sorted(set(frame['device']))}, "
            f"gpu ids {sorted(set(map(tuple, frame['gpu_ids'])))}"
        )
        stages = ["seconds_load", "seconds_prune", "seconds_repair", "seconds_eval"]
        log("  median seconds per point by stage:")
        log(frame.groupby("repair")[stages].median().round(4).to_string())
        result |= {
            "launcher_s": round(launcher_s, 1),
            "launcher_points_per_s": round(points / launcher_s, 3),
            "launcher_rows_per_s_first_to_last": round(summary["rows_per_s"], 3),
            "launcher_busy_fraction": _round(busy.fraction),
        }
        launcher_keys = summary["keys"]
    else:
        log("ray is not installed here: only the in-process loop runs")
        launcher_keys = None

    command = [
        sys.executable, str(Path(__file__).resolve()), "loop", "--grid", str(grid_path),
        "--checkpoints", str(checkpoints), "--cache", str(cache_loop),
        "--store", str(work / "loop"), "--precision", precision,
    ]  # fmt: skip
    loop_s, busy = timed_run(command, work / "loop.log", gpu)
    summary = store_summary(work / "loop")
    log(
        f"in-process loop: {len(summary['frame'])} rows ({summary['ok']} ok) in {loop_s:.1f} s: "
        f"{points / loop_s:.2f} points/s ({summary['rows_per_s']:.2f} from the first to the last "
        f"row); {busy.label}: {busy.fraction:.2f}"
    )
    result |= {
        "loop_s": round(loop_s, 1),
        "loop_points_per_s": round(points / loop_s, 3),
        "loop_rows_per_s_first_to_last": round(summary["rows_per_s"], 3),
        "loop_busy_fraction": _round(busy.fraction),
        "busy_fraction_kind": "gpu" if gpu else "cpu (whole machine)",
    }
    if launcher_s is not None:
        same = launcher_keys == summary["keys"]
        log(
            f"launcher / loop (wall time): {launcher_s / loop_s:.3f}; "
            f"same points: {'yes' if same else 'NO'}"
        )
        result |= {"launcher_over_loop": round(launcher_s / loop_s, 3), "same_points": same}

    check = precision_check(checkpoints, work / "cache-shared", "cuda:0" if gpu else "cpu")
    for name, numbers in check.items():
        log(
            f"{name}: top-1 fp32 {numbers['top1_fp32']:.4f}, bf16 {numbers['top1_bf16']:.4f} "
            f"(bf16 - fp32 {numbers['bf16_minus_fp32']:+.4f}, predictions agree on "
            f"{numbers['agreement']:.4f})"
        )
    result["bf16_vs_fp32"] = check
    result["load_average_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    result["load_average_start"] = load
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("all", "loop"), nargs="?", default="all")
    parser.add_argument("--work", type=Path, help="work directory (all)")
    parser.add_argument(
        "--checkpoints", type=Path, default=ROOT / paths.CHECKPOINTS,
        help="all: where trained demo checkpoints may be; loop: the work directory's",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="all: replicate 0 and two sparsities (30 points)"
    )
    parser.add_argument("--grid", type=Path, help="loop: the grid file")
    parser.add_argument("--cache", type=Path, help="loop: artefact cache")
    parser.add_argument("--store", type=Path, help="loop: result store")
    parser.add_argument("--precision", choices=("fp32", "bf16"), help="loop: eval precision")
    args = parser.parse_args()
    if args.step == "loop":
        loop(args)
    else:
        if args.work is None:
            parser.error("all needs --work")
        run_all(args)


if __name__ == "__main__":
    main()
