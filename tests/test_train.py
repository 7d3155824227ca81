"""Dense training: loss goes down, resume is exact, the seed decides a replicate, bad input exits
2, ImageNet init from cache."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from sweep.core.errors import UserError
from sweep.pretrain import main as pretrain_main
from sweep.tasks import data, train
from sweep.tasks.datasets.training import AugmentedArrays
from sweep.tasks.models import (
    build_model,
    checkpoint_path,
    load_checkpoint,
    load_state_dict_file,
    verify_checkpoint,
)
from sweep.tasks.train import Recipe, ThreadTuner, fit, init_from_imagenet, train_dense

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _toy_data(n: int = 64, size: int = 8) -> TensorDataset:
    """Two classes a CNN separates quickly: the bright half of the image is the label."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    images = 0.3 * torch.randn(n, 1, size, size, generator=generator)
    for index, label in enumerate(labels):
        half = slice(0, size // 2) if label == 0 else slice(size // 2, size)
        images[index, :, :, half] += 1.0
    return TensorDataset(images, labels)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet20", num_classes=2, in_channels=1, image_size=8)


RECIPE = Recipe(epochs=3, batch_size=16, lr=0.05, seed=3)


def test_training_lowers_the_loss():
    logs: list[str] = []
    history = fit(_model(), _toy_data(), RECIPE, progress=False, log=logs.append)
    assert [entry.epoch for entry in history] == [1, 2, 3]
    assert history[-1].train_loss < 0.5 * history[0].train_loss
    assert history[-1].train_top1 > 0.9
    assert len(logs) == 3 and logs[0].startswith("epoch 1/3  loss ")


class _Interrupted(Exception):
    pass


class _InterruptInEpoch(Dataset):
    """Raises part-way through epoch ``epoch``, like a Ctrl-C or a killed job."""

    def __init__(self, inner: Dataset, epoch: int) -> None:
        self.inner, self.limit, self.calls = inner, (epoch - 1) * len(inner) + 5, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        self.calls += 1
        if self.calls > self.limit:
            raise _Interrupted
        return self.inner[index]


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_continues_from_the_last_epoch_and_matches_an_uninterrupted_run(tmp_path):
    straight = _model()
    fit(straight, _toy_data(), RECIPE, resume_path=tmp_path / "a.resume.pt", progress=False)

    resume = tmp_path / "b.resume.pt"
    with pytest.raises(_Interrupted):
        fit(
            _model(),
            _InterruptInEpoch(_toy_data(), epoch=3),
            RECIPE,
            resume_path=resume,
            progress=False,
        )
    assert len(torch.load(resume, weights_only=True)["history"]) == 2

    logs: list[str] = []
    resumed = _model(seed=1)  # the resume file, not the init, decides the weights
    history = fit(resumed, _toy_data(), RECIPE, resume_path=resume, progress=False, log=logs.append)
    assert logs[0].startswith(f"resuming {resume} after epoch 2/3")
    assert [entry.epoch for entry in history] == [1, 2, 3]
    assert len(logs) == 2  # only epoch 3 ran
    assert _states_equal(resumed, straight)


def test_resume_with_other_settings_is_refused(tmp_path):
    resume = tmp_path / "r.resume.pt"
    with pytest.raises(_Interrupted):
        fit(
            _model(),
            _InterruptInEpoch(_toy_data(), epoch=2),
            RECIPE,
            resume_path=resume,
            progress=False,
        )
    before = resume.read_bytes()
    other = Recipe(epochs=3, batch_size=16, lr=0.2, seed=3)
    with pytest.raises(UserError, match=r"lr 0.05 \(now 0.2\).*--force"):
        fit(_model(), _toy_data(), other, resume_path=resume, progress=False)
    assert resume.read_bytes() == before


def test_thread_tuner_keeps_the_faster_thread_count():
    """Probe each choice, then train on the faster one until the next probe."""
    tuner = ThreadTuner([1, 2], period=5, probe=1)
    slow = {2: 0.03, 1: 0.0}  # as when other processes compete for the cores
    used = []
    for _ in range(7):
        tuner.start_step()
        used.append(torch.get_num_threads())
        time.sleep(slow[used[-1]])
        tuner.end_step()
    assert used == [1, 2, 1, 1, 1, 1, 2]
    assert tuner.summary() == "1x5 2x2" and tuner.summary() == ""
    slow = {2: 0.0, 1: 0.03}  # idle machine again: all cores win at the next probe
    used = []
    for _ in range(6):
        tuner.start_step()
        used.append(torch.get_num_threads())
        time.sleep(slow[used[-1]])
        tuner.end_step()
    assert used == [1, 1, 1, 1, 2, 2]


def test_recipe_rejects_bad_values():
    for bad, message in (
        (Recipe(epochs=0), "epochs 0"),
        (Recipe(epochs=1, batch_size=0), "batch size 0"),
        (Recipe(epochs=1, lr=-1), "learning rate -1"),
    ):
        with pytest.raises(UserError, match=message):
            bad.validate()
    with pytest.raises(UserError, match="smaller than batch size 128"):
        fit(_model(), _toy_data(), Recipe(epochs=1), progress=False)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"device": "tpu"}, "device 'tpu' is not available; expected cpu or cuda"),
        ({"threads": 0}, "threads 0"),
        ({"workers": -1}, "workers -1"),
        ({"batch_size": 0}, "batch size 0"),
    ],
)
def test_train_dense_rejects_bad_options_before_writing(tmp_path, option, message):
    with pytest.raises(UserError, match=message):
        train_dense("fashion_mnist", "resnet20", 1, tmp_path, **option)
    assert not any(tmp_path.iterdir())


def test_imagenet_weights_come_from_the_hub_cache(tmp_path, monkeypatch):
    """A file in torch's hub cache is used offline; without one, scratch with a warning."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    logs: list[str] = []
    model = build_model("resnet18", num_classes=10, image_size=224)
    assert init_from_imagenet(model, "resnet18", allow_download=False, log=logs.append) == "scratch"
    assert logs[0].startswith("warning: no ImageNet weights for resnet18")

    imagenet = build_model("resnet18", num_classes=1000, image_size=224)
    (tmp_path / "checkpoints").mkdir()
    torch.save(imagenet.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    init = init_from_imagenet(model, "resnet18", allow_download=False, log=logs.append)
    assert init == "ResNet18_Weights.IMAGENET1K_V1"
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_var, imagenet.layer4[1].bn2.running_var)
    assert model.fc.out_features == 10


# --------------------------------------------------------------------------- the CLI


def _pretrain(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweep.pretrain", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _existing_checkpoints(out: Path) -> None:
    for dataset in ("fashion_mnist", "cifar10"):
        (out / dataset).mkdir(parents=True)
        (out / dataset / "resnet20-seed0.pt").write_bytes(b"keep me")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


FM = ["--dataset", "fashion_mnist", "--arch", "resnet20"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "mnist", "--arch", "resnet20"], "unknown dataset 'mnist'; expected one of"),
        (["--dataset", "fashion_mnist", "--arch", "vgg"], "unknown arch 'vgg'; expected one of"),
        (["--dataset", "imagenette", "--arch", "resnet56"], "'resnet56' has no layout for 224 px"),
        ([*FM, "--epochs", "0"], "epochs 0 is too small"),
        ([*FM, "--epochs", "-3"], "epochs -3 is too small"),
        ([*FM, "--epochs", "two"], "--epochs: invalid int value: 'two'"),
        ([*FM, "--batch-size", "0"], "batch size 0 is too small"),
        ([*FM, "--lr", "0"], "learning rate 0.0 is not positive"),
        ([*FM, "--lr", "nan"], "learning rate nan is not positive"),
        ([*FM, "--workers", "-1"], "workers -1 is negative"),
        ([*FM, "--threads", "0"], "threads 0 is too small"),
        ([*FM, "--device", "tpu"], "device 'tpu' is not available"),
        ([*FM, "--seed", "-1"], "seed -1 is not allowed; expected an integer from 0 to"),
        ([*FM, "--seed", "x"], "--seed: invalid int value: 'x'"),
        ([*FM, "--seed", "1.5"], "--seed: invalid int value: '1.5'"),
        (
            [*FM, "--checkpoints", "a_file"],
            "output folder a_file/fashion_mnist cannot be created: a_file",
        ),
        ([*FM, "--checkpoints", "a_file/sub"], "cannot be created: a_file is a file"),
        ([*FM, "--colour", "blue"], "unrecognized arguments: --colour blue"),
        (["--arch", "resnet20"], "the following arguments are required: --dataset"),
        (["--dataset", "cifar10", "--arch", "resnet20", "--data-root", "empty"], "cifar10"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys, args, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "ckpt"
    _existing_checkpoints(out)
    before = _files(tmp_path)
    argv = args if "--checkpoints" in args else [*args, "--checkpoints", str(out)]
    assert pretrain_main([*argv, "--no-progress"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert captured.out == ""
    assert _files(tmp_path) == before


def test_cli_refuses_to_replace_an_unverifiable_checkpoint(tmp_path):
    """As a user runs it: one line, exit 2, the existing file untouched."""
    out = tmp_path / "ckpt"
    _existing_checkpoints(out)
    result = _pretrain(*FM, "--checkpoints", str(out), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "sidecar" in lines[0] and "--force" in lines[0], result.stderr
    assert _files(out)["fashion_mnist/resnet20-seed0.pt"] == b"keep me"


def test_cli_help_explains_defaults(tmp_path):
    result = _pretrain("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "fashion_mnist 4" in result.stdout and "--force" in result.stdout


needs_fashion_mnist = pytest.mark.skipif(
    data.find_data("fashion_mnist", None) is None,
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@needs_fashion_mnist
def test_train_dense_smoke_run_writes_a_loadable_checkpoint(tmp_path):
    kwargs = dict(train_limit=256, eval_limit=256, batch_size=64, progress=False)
    kwargs["cache_dir"] = tmp_path / "cache"
    logs: list[str] = []
    meta = train_dense("fashion_mnist", "resnet20", 1, tmp_path, log=logs.append, **kwargs)
    path = checkpoint_path(tmp_path, "fashion_mnist", "resnet20", 0)
    assert not path.with_suffix(".resume.pt").exists()
    model, loaded = load_checkpoint(path, "resnet20", "fashion_mnist", 10, replicate=0)
    assert loaded == meta and 0.0 <= meta.dense_top1 <= 1.0
    assert meta.recipe["train_images"] == 256 and meta.recipe["eval_images"] == 256
    assert meta.recipe["epochs"] == 1 and meta.recipe["init"] == "scratch"
    before = path.read_bytes()
    again = train_dense("fashion_mnist", "resnet20", 1, tmp_path, log=logs.append, **kwargs)
    assert again == meta and path.read_bytes() == before
    assert "exists" in logs[-1] and "--force" in logs[-1]


# --------------------------------------------------------------------------- replicates


def _inputs_seen(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every batch the model is fed from now on (what shuffling and augmentation produced)."""
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    return seen


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


class _Positions(Dataset):
    """Items carry their own position, so the batches fed to the model show the shuffle."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, index: int):
        return torch.full((1, 8, 8), float(index)), index % 2


def test_the_seed_decides_the_shuffle():
    def order(seed: int) -> list[torch.Tensor]:
        model = _model()
        seen = _inputs_seen(model)
        fit(model, _Positions(), Recipe(epochs=2, batch_size=8, seed=seed), progress=False)
        return seen

    first = order(0)
    assert _same(first, order(0)) and not _same(first, order(1))
    positions = torch.cat([batch[:, 0, 0, 0] for batch in first[:4]])
    assert sorted(positions.tolist()) == list(range(32))  # one epoch shows every item once


def test_the_seed_decides_the_augmentation():
    """One image repeated: the shuffle changes nothing, only the random crops and flips do."""
    image = np.random.default_rng(0).integers(0, 256, (1, 1, 8, 8), dtype=np.uint8)
    repeated = AugmentedArrays(
        np.repeat(image, 32, axis=0), np.arange(32) % 2, lambda x: x.float(), pad=2, augment=True
    )

    def inputs(seed: int) -> list[torch.Tensor]:
        model = _model()
        seen = _inputs_seen(model)
        fit(model, repeated, Recipe(epochs=1, batch_size=8, seed=seed), progress=False)
        return seen

    first = inputs(0)
    assert _same(first, inputs(0)) and not _same(first, inputs(1))


@needs_fashion_mnist
def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@needs_fashion_mnist
def test_replicates_differ_by_seed_and_record_it(tmp_path, monkeypatch):
    """A tiny budget (2 steps of 8 images): the seed decides the initial weights, the batches
    and so the trained weights; the path and the sidecar carry the seed and the held-out split."""
    real_fit = train.fit
    initial: list[dict[str, torch.Tensor]] = []
    batches: list[list[torch.Tensor]] = []

    def recording_fit(model, train_data, recipe, **kwargs):
        initial.append({k: v.clone() for k, v in model.state_dict().items()})
        batches.append(_inputs_seen(model))
        return real_fit(model, train_data, recipe, **kwargs)

    monkeypatch.setattr(train, "fit", recording_fit)
    options = dict(train_limit=16, eval_limit=16, batch_size=8, threads=1, progress=False)
    trained = []
    for seed, out in ((0, "a"), (0, "b"), (1, "a")):
        train_dense(
            "fashion_mnist", "resnet20", 1, tmp_path / out, cache_dir=tmp_path / "cache",
            seed=seed, log=lambda _: None, **options,
        )  # fmt: skip
        path = checkpoint_path(tmp_path / out, "fashion_mnist", "resnet20", seed)
        trained.append(load_state_dict_file(path))  # the files' bytes differ on every save
    for runs in (initial, trained):
        assert _equal(runs[0], runs[1]) and not _equal(runs[0], runs[2])
    assert _same(batches[0], batches[1]) and not _same(batches[0], batches[2])

    held = data.validation_split("fashion_mnist")
    for seed in (0, 1):
        path = checkpoint_path(tmp_path / "a", "fashion_mnist", "resnet20", seed)
        assert path.name == f"resnet20-seed{seed}.pt"
        meta = verify_checkpoint(path, "fashion_mnist", "resnet20", seed)
        assert meta.seed == seed == meta.recipe["seed"]
        assert meta.held_out == held.record() and meta.held_out["images"] == 5000
    assert sorted(p.name for p in (tmp_path / "a" / "fashion_mnist").iterdir()) == [
        "resnet20-seed0.json", "resnet20-seed0.pt", "resnet20-seed1.json", "resnet20-seed1.pt",
    ]  # fmt: skip
