"""Helper of bench/gpu_check.sh: `prepare` writes synthetic CIFAR-10 files, a random ResNet-18
checkpoint and a 12-trial grid; `loop` runs that grid's trials in this process (for a machine
without Ray); `report` summarises the trials and measures evaluation on the device (throughput
against a bare forward loop, bf16 autocast against fp32)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

TRAIN = 5000
TEST = int(os.environ.get("GPU_CHECK_TEST_IMAGES", 4096))  # fewer for a CPU try-out
PAIR = ("cifar10", "resnet18")


def prepare(work: Path) -> None:
    from sweep.tasks import data, models
    from sweep.tasks.datasets.synthetic import write_cifar10

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (TRAIN + TEST, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, TRAIN + TEST)
    write_cifar10(work / "data", images[:TRAIN], labels[:TRAIN], images[TRAIN:], labels[TRAIN:])
    torch.manual_seed(0)
    model = models.build_model("resnet18", num_classes=10, in_channels=3, image_size=32)
    held_out = data.validation_split("cifar10", work / "data").record()
    meta = models.CheckpointMeta(
        "resnet18", "cifar10", 10, 3, 32, recipe={"random": True}, seed=0, held_out=held_out
    )
    models.save_checkpoint(model, models.checkpoint_path(work / "checkpoints", *PAIR, 0), meta)
    grid = {
        "name": "gpu_check",
        "datasets": ["cifar10"],
        "archs": ["resnet18"],
        "allocations": ["erk", "lamp"],
        "sparsities": [0.9, 0.95],
        "repairs": ["none", "bn_recal", "channel_var_shrink"],
        "seeds": [0],
        "calib_size": 256,
        "eval_limit": None,
    }
    (work / "grid.yaml").write_text(yaml.safe_dump(grid))


def loop(work: Path) -> None:
    """The grid's trials through sweep.trial.run_trial, rows into the same store as the launcher."""
    from sweep.grid import expand, load_grid
    from sweep.store import ResultStore
    from sweep.tasks import models
    from sweep.trial import TrialContext, run_in_process

    grid = load_grid(str(work / "grid.yaml"))
    path = models.checkpoint_path(work / "checkpoints", *PAIR, 0)
    trials = expand(grid, {(*PAIR, 0): models.read_meta(path).sha256})
    context = TrialContext(work / "checkpoints", work / "data", work / "cache", grid.name)
    run_in_process(trials, context, ResultStore(work / "results"))


def _seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(work: Path) -> None:
    from sweep.store import read_results
    from sweep.tasks import data, evaluate, models

    frame = read_results(work / "results")
    stages = ["seconds_load", "seconds_prune", "seconds_repair", "seconds_eval"]
    print(
        f"{len(frame)} trials, status {frame['status'].value_counts().to_dict()}, "
        f"devices {sorted(set(frame['device']))}, gpu ids {sorted(map(tuple, frame['gpu_ids']))}"
    )
    print(frame.groupby("repair")[stages].median().round(3).to_string())

    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    model, _ = models.load_checkpoint(
        models.checkpoint_path(work / "checkpoints", *PAIR, 0), arch="resnet18"
    )
    eval_set = data.eval_set("cifar10", work / "data", work / "cache")
    tensors = [
        x.to(device).contiguous(memory_format=torch.channels_last) for x, _ in eval_set.batches(512)
    ]
    bare = model.to(device).eval().to(memory_format=torch.channels_last)

    def bare_loop() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"),
        ):
            for x in tensors:
                bare(x)

    bare_s = _seconds(bare_loop)
    eval_s = _seconds(lambda: evaluate.predict_logits(model, eval_set, device=device))
    fp32 = evaluate.predict_logits(model, eval_set, device=device, mixed_precision=False)
    bf16 = evaluate.predict_logits(model, eval_set, device=device)
    labels = torch.as_tensor(eval_set.labels)
    top1 = {
        name: (logits.argmax(1) == labels).float().mean().item()
        for name, logits in (("fp32", fp32), ("bf16", bf16))
    }
    result = {
        "device": str(torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"),
        "eval_images_per_s": round(len(eval_set) / eval_s),
        "bare_forward_images_per_s": round(len(eval_set) / bare_s),
        "eval_over_bare": round(eval_s / bare_s, 3),
        "top1_fp32": top1["fp32"],
        "top1_bf16": top1["bf16"],
        "top1_bf16_minus_fp32": round(top1["bf16"] - top1["fp32"], 5),
        "prediction_agreement_bf16_fp32": (fp32.argmax(1) == bf16.argmax(1)).float().mean().item(),
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "loop", "report"))
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    {"prepare": prepare, "loop": loop, "report": report}[args.step](args.work)


if __name__ == "__main__":
    main()
