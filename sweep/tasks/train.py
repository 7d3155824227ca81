"""Dense training: the checkpoints that the sweep prunes.

One standard recipe (SGD with Nesterov momentum, weight decay off BN/bias, linear warm-up then
cosine decay, crop/flip augmentation from the dataset) so that every dense model in a study is
trained the same way. Each seed trains one replicate: the seed decides the initial weights and,
through the per-epoch seeds, the shuffling and the augmentation. Training never sees the
dataset's validation split, and the checkpoint's sidecar records which one it held out. Training
resumes from its last finished epoch: after every epoch the full state goes to
``<out>/<dataset>/<arch>-seed<N>.resume.pt``, and the random streams of epoch ``e`` are seeded
from ``(seed, e)``, so an interrupted and resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from sweep.catalog.archs import ARCHS, IMAGENET, layout_for
from sweep.catalog.datasets import DATASETS
from sweep.core import paths
from sweep.core.errors import CheckpointError, UserError
from sweep.tasks import data
from sweep.tasks.datasets.holdout import Holdout
from sweep.tasks.models import (
    CheckpointMeta,
    OutdatedCheckpointError,
    atomic_torch_save,
    build_model,
    check_seed,
    checkpoint_path,
    save_checkpoint,
    verify_checkpoint,
)

SCRATCH_LR, FINETUNE_LR = 0.1, 0.01


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights; stored in the sidecar and the resume file."""

    epochs: int
    batch_size: int = 128
    lr: float = SCRATCH_LR
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.05  # of all steps, at most one epoch
    seed: int = 0  # the replicate
    train_limit: int | None = None  # train on the first N images only (smoke runs)
    init: str = "scratch"  # or the torchvision weights the run was fine-tuned from

    def validate(self) -> None:
        if self.epochs < 1:
            raise UserError(f"epochs {self.epochs} is too small; expected an integer >= 1")
        if self.batch_size < 1:
            raise UserError(f"batch size {self.batch_size} is too small; expected >= 1")
        if not self.lr > 0:
            raise UserError(f"learning rate {self.lr} is not positive; expected > 0")
        check_seed(self.seed)


@dataclass
class EpochLog:
    epoch: int  # 1-based
    train_loss: float
    train_top1: float
    test_top1: float | None
    seconds: float


def cpu_cores() -> int:
    """Cores this process may run on (torch's default thread count can be lower)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


class ThreadTuner:
    """Keeps CPU training on whichever thread count is faster right now.

    On an idle 2-core machine 2 threads train ResNet-20 ~1.7x faster than 1; while other
    processes compete for the cores, torch's OpenMP threads wait on each other and 2 threads
    become up to 10x slower than 1. So every ``period`` steps the next steps run with each
    choice in turn (``probe`` steps each, real training steps, nothing wasted but speed), and
    training continues with the fastest until the next probe.
    """

    def __init__(self, choices: Iterable[int], period: int = 150, probe: int = 2) -> None:
        self.choices = tuple(dict.fromkeys(choices))
        self.period, self.probe = period, probe
        self.best = self.choices[-1]
        self.steps = 0
        self.seconds: dict[int, float] = {}
        self.used: dict[int, int] = {}
        self._started = 0.0

    def _probing(self) -> int | None:
        """Index of the choice being probed at this step, None outside the probe window."""
        position = self.steps % self.period
        index = position // self.probe
        return index if len(self.choices) > 1 and index < len(self.choices) else None

    def start_step(self) -> None:
        index = self._probing()
        threads = self.best if index is None else self.choices[index]
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self._started = time.perf_counter()

    def end_step(self) -> None:
        elapsed = time.perf_counter() - self._started
        threads = torch.get_num_threads()
        self.used[threads] = self.used.get(threads, 0) + 1
        index = self._probing()
        if index is not None:
            first = self.steps % self.period % self.probe == 0
            self.seconds[threads] = elapsed if first else min(elapsed, self.seconds[threads])
            if index == len(self.choices) - 1 and not (self.steps + 1) % self.period % self.probe:
                self.best = min(self.choices, key=self.seconds.__getitem__)
        self.steps += 1

    def summary(self) -> str:
        """Steps per thread count since the last summary, e.g. '2x440 1x28'."""
        text = " ".join(f"{threads}x{count}" for threads, count in sorted(self.used.items()))
        self.used = {}
        return text


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    # channels_last makes CPU convolutions ~1.4x faster here (and suits GPU tensor cores).
    return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def top1_accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Fraction of correct argmax predictions, batch inference in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for images, labels in batches:
        predictions = model(_to_device(images, device)).argmax(dim=1).cpu()
        correct += int((predictions == labels).sum())
        total += len(labels)
    model.train(was_training)
    return correct / max(total, 1)


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD with weight decay on conv/linear weights only (decaying BN scales and biases hurts)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )


def _schedule(
    optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step linear warm-up, then cosine decay to zero at the last step."""
    total = recipe.epochs * steps_per_epoch
    warmup = max(1, min(steps_per_epoch, math.ceil(recipe.warmup_fraction * total)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def fit(
    model: nn.Module,
    train_data: Dataset,
    recipe: Recipe,
    *,
    evaluate: Callable[[nn.Module], float] | None = None,
    resume_path: Path | None = None,
    workers: int = 0,
    device: str | torch.device = "cpu",
    threads: Iterable[int] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[EpochLog]:
    """Train ``model`` in place; with ``resume_path``, continue from / checkpoint every epoch.

    ``threads``: CPU thread counts to choose from while training (see :class:`ThreadTuner`);
    one count fixes it (bitwise reproducible runs), None keeps torch's current setting.

    The resume file must have been written with the same recipe; otherwise a UserError says so
    (training with other settings on top of it would give weights that no recipe describes).
    """
    recipe.validate()
    device = torch.device(device)
    loader = _train_loader(train_data, recipe, workers, device)
    model.to(device, memory_format=torch.channels_last)
    optimizer = _optimizer(model, recipe)
    scheduler = _schedule(optimizer, recipe, len(loader))
    history: list[EpochLog] = []
    if resume_path is not None and resume_path.is_file():
        history = _restore(resume_path, recipe, model, optimizer, scheduler)
        log(f"resuming {resume_path} after epoch {len(history)}/{recipe.epochs}")
    tuner = ThreadTuner(threads if threads is not None else [torch.get_num_threads()])
    for epoch in range(len(history) + 1, recipe.epochs + 1):
        torch.manual_seed(_epoch_seed(recipe.seed, epoch))  # shuffling and augmentation
        started = time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"epoch {epoch}/{recipe.epochs}",
            disable=not progress,
            leave=False,
            file=sys.stderr,
            mininterval=1.0,
        )
        loss, top1 = train_one_epoch(model, bar, optimizer, scheduler, tuner, device)
        test_top1 = evaluate(model) if evaluate is not None else None
        history.append(EpochLog(epoch, loss, top1, test_top1, time.perf_counter() - started))
        log(_epoch_line(history[-1], recipe.epochs, tuner))
        if resume_path is not None:
            _save_resume(resume_path, recipe, history, model, optimizer, scheduler)
    return history


def _train_loader(
    train_data: Dataset, recipe: Recipe, workers: int, device: torch.device
) -> DataLoader:
    if len(train_data) < recipe.batch_size:
        raise UserError(
            f"training set of {len(train_data)} images is smaller than batch size "
            f"{recipe.batch_size}; expected at least one full batch"
        )
    return DataLoader(
        train_data,
        batch_size=recipe.batch_size,
        shuffle=True,
        drop_last=True,  # a last batch of 1 image breaks BatchNorm
        # Workers restart every epoch so their seeds follow the per-epoch seed (exact resume).
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )


def train_one_epoch(
    model: nn.Module,
    batches: tqdm,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    tuner: ThreadTuner,
    device: torch.device,
) -> tuple[float, float]:
    """One pass over the training batches; (mean loss, train top-1) of what it saw."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    loss_sum = correct = seen = 0.0
    for images, labels in batches:
        images, labels = _to_device(images, device), labels.to(device, non_blocking=True)
        tuner.start_step()
        logits = model(images)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        tuner.end_step()
        loss_sum += float(loss.detach()) * len(labels)
        correct += int((logits.detach().argmax(1) == labels).sum())
        seen += len(labels)
        batches.set_postfix(
            loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False
        )
    batches.close()
    return loss_sum / seen, correct / seen


def _epoch_line(entry: EpochLog, epochs: int, tuner: ThreadTuner) -> str:
    test_text = f"  test top-1 {entry.test_top1:.4f}" if entry.test_top1 is not None else ""
    return (
        f"epoch {entry.epoch}/{epochs}  loss {entry.train_loss:.4f}  "
        f"train top-1 {entry.train_top1:.4f}{test_text}  {entry.seconds:.0f} s  "
        f"(steps per thread count: {tuner.summary()})"
    )


def _save_resume(
    path: Path,
    recipe: Recipe,
    history: list[EpochLog],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Everything an interrupted run needs to continue after its last finished epoch."""
    atomic_torch_save(
        {
            "recipe": dataclasses.asdict(recipe),
            "history": [dataclasses.asdict(h) for h in history],
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        path,
    )


def _restore(
    path: Path,
    recipe: Recipe,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> list[EpochLog]:
    """Load a resume file into model/optimizer/scheduler; its epoch count is len(history)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["recipe"]
        if saved != dataclasses.asdict(recipe):
            changed = ", ".join(
                f"{key} {saved.get(key)!r} (now {value!r})"
                for key, value in dataclasses.asdict(recipe).items()
                if saved.get(key) != value
            )
            raise UserError(
                f"resume file {path} was written with {changed}; rerun with the same arguments "
                "or pass --force to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return [EpochLog(**entry) for entry in state["history"]]
    except UserError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"resume file {path} is unreadable ({' '.join(str(error).split())[:200]}); "
            "expected a file written by an earlier run; pass --force to start over"
        ) from error


# --------------------------------------------------------------------------- ImageNet weights

_OLD_DENSE_KEY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


def _imagenet_state_dict(arch: str, allow_download: bool) -> tuple[dict | None, str]:
    """torchvision's default ImageNet weights from torch's hub cache (or a download if allowed).

    Returns (state_dict or None, a description of why not). The file is read with
    ``weights_only=True`` like every other checkpoint.
    """
    weights = tvm.get_model_weights(ARCHS[arch].builder).DEFAULT
    filename = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.is_file() and not allow_download:
        return None, f"{filename} is not in {cached.parent} and downloading is off"
    try:
        state = torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as error:  # offline: URLError, socket errors, hash mismatch …
        return None, f"{filename} is not in {cached.parent} and the download failed ({error})"
    # Old DenseNet files name layers "norm.1"; today's modules are "norm1".
    return {_OLD_DENSE_KEY.sub(r"\1\2.", key): value for key, value in state.items()}, str(weights)


def init_from_imagenet(
    model: nn.Module, arch: str, allow_download: bool, log: Callable[[str], None] = print
) -> str:
    """Copy ImageNet weights into everything but the classifier; returns the recipe's ``init``."""
    state, source = _imagenet_state_dict(arch, allow_download)
    if state is None:
        log(f"warning: no ImageNet weights for {arch} ({source}); training from scratch")
        return "scratch"
    prefix = f"{ARCHS[arch].classifier}."
    body = {key: value for key, value in state.items() if not key.startswith(prefix)}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(not key.startswith(prefix) for key in missing):
        raise CheckpointError(
            f"ImageNet weights {source} do not fit {arch}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}; expected torchvision's {arch} layout"
        )
    log(f"fine-tuning {arch} from torchvision weights {source}")
    return source


# --------------------------------------------------------------------------- the entry point


def _check_device(device: str) -> str:
    """'cpu', 'cuda' or 'cuda:N' that exists here; a UserError otherwise."""
    kind, _, index = device.partition(":")
    usable = kind == "cpu" and not index
    if kind == "cuda" and torch.cuda.is_available():
        usable = not index or (index.isdigit() and int(index) < torch.cuda.device_count())
    if not usable:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise UserError(f"device {device!r} is not available; expected cpu or cuda ({gpus} GPUs)")
    return device


def _check_writable_dir(folder: Path) -> None:
    """UserError unless ``folder`` is, or can be made as, a folder this process may write in:
    found before training, not when the first epoch's resume file fails to save."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"output folder {folder} cannot be created: {existing} is a file; expected a folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable ({existing} is read-only)")


def resume_path_for(out_dir: Path | str, dataset: str, arch: str, seed: int) -> Path:
    return checkpoint_path(out_dir, dataset, arch, seed).with_suffix(".resume.pt")


def train_dense(
    dataset: str,
    arch: str,
    epochs: int | None = None,
    out_dir: Path | str = paths.CHECKPOINTS,
    data_root: Path | str | None = None,
    *,
    batch_size: int = 128,
    lr: float | None = None,
    seed: int = 0,
    force: bool = False,
    allow_download: bool = True,
    cache_dir: Path | str | None = None,
    workers: int = 0,
    device: str | None = None,
    threads: int | None = None,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> CheckpointMeta:
    """Train (or resume) replicate ``seed`` of the dense ``dataset``/``arch`` and write its
    checkpoint ``checkpoint_path(out_dir, dataset, arch, seed)``.

    Trains on the train split minus its validation split. An existing final checkpoint is
    validated and returned without retraining unless ``force``. ``train_limit``/``eval_limit``
    train on the first training images / evaluate on a fixed subset of the test split only
    (smoke runs).
    """
    spec = DATASETS[dataset]
    ARCHS[arch].check_image_size(spec.image_size)
    recipe = Recipe(
        epochs=spec.default_epochs if epochs is None else epochs,
        batch_size=batch_size,
        lr=SCRATCH_LR if lr is None else lr,
        seed=seed,
        train_limit=train_limit,
    )
    device = _check_run_args(recipe, workers, threads, device)  # before anything slow or written
    target = checkpoint_path(out_dir, dataset, arch, seed)
    resume = resume_path_for(out_dir, dataset, arch, seed)
    _check_writable_dir(target.parent)
    if target.exists() and not force:
        return _existing_checkpoint(target, dataset, arch, seed, log)
    data_root = Path(data_root) if data_root is not None else None
    training = data.train_dataset(dataset, data_root=data_root, augment=True)
    eval_set = data.eval_set(dataset, data_root=data_root, cache_dir=cache_dir, limit=eval_limit)
    train_data = training
    if train_limit is not None:
        train_data = Subset(training, range(min(train_limit, len(training))))
    # On the CPU, let the tuner pick between 1 thread and all cores unless told a count.
    cores = cpu_cores()
    choices = [threads] if threads else [cores] if device != "cpu" else [1, cores]
    log(
        f"training {arch} seed {seed} on {dataset}: {len(train_data)} images "
        f"({len(training.holdout.val)} held out for validation), {recipe.epochs} epochs, "
        f"{device}, CPU threads {' or '.join(map(str, dict.fromkeys(choices)))}"
    )
    model, recipe = _initial_model(dataset, arch, recipe, lr, allow_download, log)
    if force:
        resume.unlink(missing_ok=True)
    history = fit(
        model,
        train_data,
        recipe,
        evaluate=lambda m: top1_accuracy(m, eval_set.batches(512)),
        resume_path=resume,
        workers=workers,
        device=device,
        threads=choices,
        progress=progress,
        log=log,
    )
    run = {
        "train_images": len(train_data),
        "eval_images": len(eval_set),
        "epoch_seconds": [round(h.seconds, 1) for h in history],
        "device": device,
    }
    meta = _checkpoint_meta(dataset, arch, recipe, training.holdout, history, run)
    meta = save_checkpoint(model, target, meta)
    resume.unlink(missing_ok=True)
    log(f"wrote {target} (dense top-1 {meta.dense_top1:.4f})")
    return meta


def _checkpoint_meta(
    dataset: str,
    arch: str,
    recipe: Recipe,
    held_out: Holdout,
    history: list[EpochLog],
    run: dict[str, object],
) -> CheckpointMeta:
    """What the sidecar records: the model's shape, the split it held out, its test top-1, and
    the recipe with what this run saw."""
    spec = DATASETS[dataset]
    return CheckpointMeta(
        arch=arch,
        dataset=dataset,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        seed=recipe.seed,
        held_out=held_out.record(),
        dense_top1=history[-1].test_top1,
        recipe={**dataclasses.asdict(recipe), **run},
    )


def _check_run_args(recipe: Recipe, workers: int, threads: int | None, device: str | None) -> str:
    """Every bad training argument, named; the device to train on."""
    recipe.validate()
    if workers < 0:
        raise UserError(f"workers {workers} is negative; expected 0 (in-process) or more")
    if threads is not None and threads < 1:
        raise UserError(f"threads {threads} is too small; expected >= 1 (default: all cores)")
    return _check_device(device or default_device())


def _existing_checkpoint(
    target: Path, dataset: str, arch: str, seed: int, log: Callable[[str], None]
) -> CheckpointMeta:
    """A final checkpoint already there is checked and reused, never silently retrained."""
    try:
        meta = verify_checkpoint(target, dataset, arch, seed)
    except OutdatedCheckpointError:  # its message gives the whole retrain command
        raise
    except CheckpointError as error:
        raise CheckpointError(f"{error}; pass --force to retrain") from error
    log(f"{target} exists (dense top-1 {meta.dense_top1}); pass --force to retrain")
    return meta


def _initial_model(
    dataset: str,
    arch: str,
    recipe: Recipe,
    lr: float | None,
    allow_download: bool,
    log: Callable[[str], None],
) -> tuple[nn.Module, Recipe]:
    """The model training starts from: seeded random weights, or torchvision's ImageNet weights
    for a 224 px RGB dataset where the arch has them (the recipe then says so and fine-tunes)."""
    spec, info = DATASETS[dataset], ARCHS[arch]
    torch.manual_seed(recipe.seed)
    model = build_model(arch, spec.num_classes, spec.in_channels, spec.image_size)
    if info.imagenet_weights and layout_for(spec.image_size) == IMAGENET and spec.in_channels == 3:
        init = init_from_imagenet(model, arch, allow_download, log)
        if init != "scratch":
            recipe = dataclasses.replace(recipe, init=init, lr=FINETUNE_LR if lr is None else lr)
    return model, recipe
