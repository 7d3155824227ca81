"""Dataset loaders on small files written in each dataset's exact on-disk format, plus the real
Fashion-MNIST of the Debian package when it is installed. Offline: nothing is downloaded."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import write_cifar, write_fashion_mnist, write_imagenette, write_jpegs

from sweep.catalog.datasets import DATASETS
from sweep.core.errors import DataMissingError, UnknownNameError, UserError
from sweep.tasks import data
from sweep.tasks.datasets.sources import FASHION_MNIST_DEBIAN, SKIP_CHECKSUMS_ENV

SHIPPED_WNIDS = (
    Path(data.__file__).with_name("imagenet100_classes.txt").read_text().split()
)  # file order, not sorted
IMAGENETTE_WNIDS = DATASETS["imagenette"].class_ids
IMAGENET100_WNIDS = DATASETS["imagenet100"].class_ids
NOT_IN_IMAGENET100 = "n01440764"  # tench: an ImageNet-1k class outside the 100-class subset


@pytest.fixture
def cifar10(tmp_path: Path) -> dict:
    """A CIFAR-10 python tree: 5 train batches of 4 images, a test batch of 6, batches.meta."""
    arrays = write_cifar("cifar10", tmp_path, train=20, test=6)
    (train, train_labels), (test, test_labels) = arrays["train"], arrays["test"]
    return {"root": tmp_path, "cache": tmp_path / "cache", "train": train, "test": test,
            "train_labels": train_labels, "test_labels": test_labels}  # fmt: skip


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")


def test_registry_has_the_five_datasets() -> None:
    assert data.DATASETS is DATASETS and all(DATASETS[n] is DATASETS[n] for n in DATASETS)
    assert set(data.DATASETS) == {
        "fashion_mnist",
        "cifar10",
        "cifar100",
        "imagenette",
        "imagenet100",
    }
    shapes = {n: (s.num_classes, s.in_channels, s.image_size) for n, s in data.DATASETS.items()}
    assert shapes == {
        "fashion_mnist": (10, 1, 28),
        "cifar10": (10, 3, 32),
        "cifar100": (100, 3, 32),
        "imagenette": (10, 3, 224),
        "imagenet100": (100, 3, 224),
    }
    for spec in data.DATASETS.values():
        assert len(spec.mean) == len(spec.std) == spec.in_channels
        assert spec.test_size < spec.train_size
        assert (spec.stored_shape is None) == (spec.crop_padding is None) == bool(spec.class_ids)
        assert len(spec.class_ids) in (0, spec.num_classes)
    assert len(IMAGENET100_WNIDS) == len(set(SHIPPED_WNIDS)) == 100


@pytest.mark.parametrize(
    "call",
    [
        lambda: DATASETS["mnist"],
        lambda: data.find_data("cifar-10", None),
        lambda: data.eval_set("imagenet"),
        lambda: data.calibration_set("cifar", 8, 0),
        lambda: data.train_dataset("svhn", download=False),
        lambda: data.missing_data_message("mnist"),
        lambda: data.download("imagenet", None),
    ],
)
def test_unknown_dataset_is_a_user_error(call) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown dataset .*expected one of: fashion_mnist"):
        call()


def test_normalize_standardises_uint8_images() -> None:
    spec = DATASETS["cifar10"]
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = spec.normalize(images)
    mean, std = torch.tensor(spec.mean).view(3, 1, 1), torch.tensor(spec.std).view(3, 1, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0], (-mean / std).expand(3, 2, 2))
    torch.testing.assert_close(out[1], ((1 - mean) / std).expand(3, 2, 2))
    with pytest.raises(TypeError, match="uint8"):
        spec.normalize(images.float())


def test_cifar10_pickle_batches_load_with_the_checksum_opt_out(
    cifar10: dict, skip_md5: None, caplog: pytest.LogCaptureFixture
) -> None:
    root, cache = cifar10["root"], cifar10["cache"]
    assert data.find_data("cifar10", root) == root / "cifar-10-batches-py"
    with caplog.at_level(logging.WARNING):
        evaluation = data.eval_set("cifar10", root, cache)
    assert "NOT verifying the MD5" in caplog.text
    np.testing.assert_array_equal(evaluation.images, cifar10["test"])  # R, G, B planes in order
    np.testing.assert_array_equal(evaluation.labels, cifar10["test_labels"])
    assert evaluation.labels.dtype == np.int64

    train = data.train_dataset("cifar10", root, augment=False, download=False)
    assert len(train) == 18  # 2 of the 20 are the validation split
    row = train.indices[7]
    image, label = train[7]
    assert isinstance(label, int) and label == cifar10["train_labels"][row]
    spec = DATASETS["cifar10"]
    torch.testing.assert_close(image, spec.normalize(torch.from_numpy(cifar10["train"][row])))


def test_cifar_checksums_are_verified_by_default(cifar10: dict, monkeypatch) -> None:
    monkeypatch.delenv(SKIP_CHECKSUMS_ENV, raising=False)
    with pytest.raises(DataMissingError, match=rf"test_batch fail.*MD5.*{SKIP_CHECKSUMS_ENV}=1"):
        data.eval_set("cifar10", cifar10["root"], cifar10["cache"])


def test_cifar100_reads_the_fine_labels(tmp_path: Path, skip_md5: None) -> None:
    written = write_cifar("cifar100", tmp_path, train=10, test=5)
    evaluation = data.eval_set("cifar100", tmp_path, tmp_path / "cache")
    np.testing.assert_array_equal(evaluation.images, written["test"][0])
    assert evaluation.labels.tolist() == written["test"][1].tolist()  # fine, not coarse (% 20)
    assert written["test"][1].max() >= 20, "seed gives no label that tells fine from coarse"
    assert len(data.train_dataset("cifar100", tmp_path, download=False)) == 9  # 1 held out


def test_imagenette_folder_layout(tmp_path: Path) -> None:
    write_imagenette(tmp_path / "imagenette2-320", per_class=2)
    assert data.find_data("imagenette", tmp_path) == tmp_path / "imagenette2-320"
    evaluation = data.eval_set("imagenette", tmp_path, tmp_path / "cache")
    assert evaluation.images.shape == (20, 3, 224, 224) and evaluation.images.dtype == np.uint8
    assert evaluation.labels.tolist() == [c for c in range(10) for _ in range(2)]  # sorted wnids
    calibration = data.calibration_set("imagenette", 5, seed=0, data_root=tmp_path,
                                       cache_dir=tmp_path / "cache")  # fmt: skip
    assert calibration.images.shape == (5, 3, 224, 224)
    train = data.train_dataset("imagenette", tmp_path, augment=True, download=False)
    assert len(train) == 18  # 10 % of the 20 train images are the validation split
    image, label = train[3]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    assert label == train.indices[3] // 2  # two images per class, sorted by class


def test_imagenette_with_a_missing_class_is_missing_data(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for wnid in IMAGENETTE_WNIDS[:-1]:
            write_jpegs(tmp_path / "imagenette2" / split / wnid, 1, seed=0)
    assert data.find_data("imagenette", tmp_path) is None
    with pytest.raises(DataMissingError, match=IMAGENETTE_WNIDS[-1]):
        data.eval_set("imagenette", tmp_path, tmp_path / "cache")


def test_imagenet100_keeps_only_the_subset_classes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chosen = [SHIPPED_WNIDS[0], SHIPPED_WNIDS[50], SHIPPED_WNIDS[99]]
    for split, count in (("train", 3), ("val", 2)):
        for i, wnid in enumerate([*chosen, NOT_IN_IMAGENET100]):
            write_jpegs(tmp_path / "imagenet" / split / wnid, count, seed=i)
    assert data.find_data("imagenet100", tmp_path) == tmp_path / "imagenet"
    with caplog.at_level(logging.WARNING):
        evaluation = data.eval_set("imagenet100", tmp_path, tmp_path / "cache")
    assert "only 3 of the 100 classes" in caplog.text
    expected = sorted(IMAGENET100_WNIDS.index(w) for w in chosen for _ in range(2))
    assert evaluation.labels.tolist() == expected  # the tench folder is left out
    assert evaluation.images.shape == (6, 3, 224, 224)
    assert len(data.train_dataset("imagenet100", tmp_path, download=False)) == 8  # 1 held out


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", "cifar-10-batches-py holds data_batch_1"),
        ("cifar100", "cifar-100-python holds train, test, meta"),
        ("imagenette", "imagenette2-320"),
        ("imagenet100", "cannot be downloaded"),
    ],
)
def test_missing_data_says_where_to_put_the_files(tmp_path: Path, name, expected) -> None:
    root = tmp_path / "empty"
    assert data.find_data(name, root) is None
    for load in (
        lambda: data.eval_set(name, root, tmp_path / "cache"),
        lambda: data.calibration_set(name, 4, 0, root, tmp_path / "cache"),
        lambda: data.train_dataset(name, root, download=False),
    ):
        with pytest.raises(DataMissingError) as error:
            load()
        assert str(root) in str(error.value) and expected in str(error.value)
        command = f"python -m sweep.data download {name} --data-root {root}"
        assert (command in str(error.value)) == (DATASETS[name].download is not None)
    assert not (tmp_path / "cache").exists()


def test_calibration_set_holds_images_only(cifar10: dict, skip_md5: None) -> None:
    calibration = data.calibration_set("cifar10", 8, seed=3, data_root=cifar10["root"],
                                       cache_dir=cifar10["cache"])  # fmt: skip
    assert [f.name for f in dataclasses.fields(calibration)] == ["images", "spec", "key"]
    assert not hasattr(calibration, "__dict__")  # slots: nothing can be attached later
    with pytest.raises(AttributeError):
        calibration.labels = cifar10["train_labels"]
    assert calibration.images.dtype == torch.uint8 and calibration.images.shape == (8, 3, 32, 32)
    batches = list(calibration)
    assert [b.shape[0] for b in calibration.batches(batch_size=3)] == [3, 3, 2]
    assert all(isinstance(b, torch.Tensor) for b in batches)  # images, not (image, label) pairs
    torch.testing.assert_close(torch.cat(batches), calibration.spec.normalize(calibration.images))

    train = torch.from_numpy(cifar10["train"]).flatten(1)
    test = torch.from_numpy(cifar10["test"]).flatten(1)
    val = data.validation_split("cifar10", cifar10["root"]).val
    rows = []
    for image in calibration.images.flatten(1):
        (row,) = torch.nonzero((train == image).all(1)).flatten().tolist()  # a train image
        assert not (test == image).all(1).any()
        rows.append(row)
    assert len(set(rows)) == 8 and not set(rows) & set(val.tolist())  # each once, none held out


def test_calibration_set_is_deterministic_per_seed(cifar10: dict, skip_md5: None) -> None:
    def draw(seed: int, cache: Path) -> data.CalibrationSet:
        return data.calibration_set("cifar10", 8, seed, cifar10["root"], cache)

    first, again = draw(0, cifar10["cache"]), draw(0, cifar10["root"] / "other-cache")
    other = draw(1, cifar10["cache"])
    assert torch.equal(first.images, again.images) and first.key == again.key
    assert not torch.equal(first.images, other.images) and first.key != other.key
    with pytest.raises(UserError, match="calibration size 19 .* 18 train images .* validation"):
        data.calibration_set("cifar10", 19, 0, cifar10["root"], cifar10["cache"])


def test_eval_set_is_decoded_once_and_memory_mapped(cifar10: dict, skip_md5: None) -> None:
    first = data.eval_set("cifar10", cifar10["root"], cifar10["cache"])
    (image_file,) = (cifar10["cache"] / "eval").glob("cifar10-*[0-9a-f].npy")
    written = image_file.stat().st_mtime_ns
    batch = cifar10["root"] / "cifar-10-batches-py" / "test_batch"
    stat = batch.stat()  # garble the source, same size and mtime: a second decode would fail
    batch.write_bytes(bytes(stat.st_size))
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = data.eval_set("cifar10", cifar10["root"], cifar10["cache"])
    assert image_file.stat().st_mtime_ns == written
    assert isinstance(second.images, np.memmap) and Path(second.images.filename) == image_file
    assert second.key == first.key and len(second) == 6
    images, labels = zip(*second.batches(batch_size=4), strict=True)
    assert [len(x) for x in images] == [4, 2]
    torch.testing.assert_close(
        torch.cat(images), second.spec.normalize(torch.from_numpy(cifar10["test"]))
    )
    assert torch.cat(labels).tolist() == cifar10["test_labels"].tolist()


def test_eval_set_limit_is_a_fixed_subset(cifar10: dict, skip_md5: None) -> None:
    full = data.eval_set("cifar10", cifar10["root"], cifar10["cache"])
    part = data.eval_set("cifar10", cifar10["root"], cifar10["cache"], limit=3)
    again = data.eval_set("cifar10", cifar10["root"], cifar10["root"] / "fresh", limit=3)
    assert len(part) == 3 and part.key == again.key != full.key
    np.testing.assert_array_equal(part.images, again.images)
    rows = [int(np.flatnonzero((full.images == img).all((1, 2, 3)))[0]) for img in part.images]
    assert rows == sorted(rows)
    np.testing.assert_array_equal(part.labels, full.labels[rows])
    assert data.eval_set("cifar10", cifar10["root"], cifar10["cache"], limit=99).key == full.key
    with pytest.raises(UserError, match="eval limit 0"):
        data.eval_set("cifar10", cifar10["root"], cifar10["cache"], limit=0)


def test_training_augmentation_is_a_padded_crop_with_flip(cifar10: dict, skip_md5: None) -> None:
    train = data.train_dataset("cifar10", cifar10["root"], augment=True, download=False)
    spec = DATASETS["cifar10"]
    row = train.indices[5]
    original = torch.nn.functional.pad(torch.from_numpy(cifar10["train"][row]), (4, 4, 4, 4))
    crops = [original[:, y : y + 32, x : x + 32] for y in range(9) for x in range(9)]
    candidates = [spec.normalize(view) for crop in crops for view in (crop, crop.flip(-1))]
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        image, label = train[5]
        assert label == cifar10["train_labels"][row]
        matches = [i for i, c in enumerate(candidates) if torch.equal(image, c)]
        assert matches, "augmented image is not a crop/flip of the padded original"
        seen.update(matches)
    assert len(seen) > 10  # the crops and flips vary


def test_fashion_mnist_data_root_comes_first(tmp_path: Path) -> None:
    written = write_fashion_mnist(tmp_path, train=12, test=5, seed=2)
    assert data.find_data("fashion_mnist", tmp_path) == tmp_path
    evaluation = data.eval_set("fashion_mnist", tmp_path, tmp_path / "cache")
    np.testing.assert_array_equal(evaluation.images[:, 0], written["t10k"][0])
    assert evaluation.labels.tolist() == [0, 1, 2, 3, 4]
    assert len(data.train_dataset("fashion_mnist", tmp_path, download=False)) == 11  # 1 held out

    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00"))
    with pytest.raises(DataMissingError, match="t10k-labels-idx1-ubyte.gz is truncated"):
        data.eval_set("fashion_mnist", tmp_path, tmp_path / "cache2")


@pytest.mark.skipif(
    not (FASHION_MNIST_DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"real Fashion-MNIST absent from {FASHION_MNIST_DEBIAN}: "
    "apt-get install dataset-fashion-mnist",
)
def test_real_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    empty = tmp_path / "no-data-here"
    assert data.find_data("fashion_mnist", empty) == FASHION_MNIST_DEBIAN
    evaluation = data.eval_set("fashion_mnist", empty, tmp_path / "cache")
    assert evaluation.images.shape == (10000, 1, 28, 28)
    assert np.bincount(evaluation.labels).tolist() == [1000] * 10

    train = data.train_dataset("fashion_mnist", empty, augment=True, download=False)
    assert len(train) == 55000  # the validation split held out
    loader = torch.utils.data.DataLoader(train, batch_size=256, shuffle=True)
    start = time.perf_counter()
    batches = list(loader)
    epoch_seconds = time.perf_counter() - start
    images = batches[0][0]
    assert images.shape == (256, 1, 28, 28) and images.dtype == torch.float32
    val_labels = data.eval_set("fashion_mnist", empty, tmp_path / "cache", split="val").labels
    held_out = np.bincount(val_labels, minlength=10)
    assert torch.bincount(torch.cat([y for _, y in batches])).tolist() == (6000 - held_out).tolist()
    assert epoch_seconds < 10, f"one augmented epoch of data loading took {epoch_seconds:.1f} s"

    calibration = data.calibration_set("fashion_mnist", 64, 0, empty, tmp_path / "cache")
    assert calibration.images.shape == (64, 1, 28, 28)
