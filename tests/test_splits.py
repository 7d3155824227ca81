"""The validation split: committed indices equal to the rule, never served for training or
calibration, evaluated on as its own eval split. On the real Fashion-MNIST (Debian package) and
on CIFAR-10 files of the release's size written in its exact format."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import write_cifar
from support import needs_fashion_mnist

from sweep.catalog.datasets import DATASETS
from sweep.core.errors import UnknownNameError
from sweep.tasks import data
from sweep.tasks.datasets import holdout
from sweep.tasks.datasets.formats import read_idx
from sweep.tasks.datasets.sources import FASHION_MNIST_DEBIAN, SKIP_CHECKSUMS_ENV

CALIBRATION_SEEDS = range(5)


@pytest.mark.parametrize("name", holdout.STORED)
def test_committed_indices_are_the_rule_drawn_at_the_release_size(name: str) -> None:
    info = DATASETS[name]
    stored = np.load(holdout.split_file(name))
    assert stored.dtype == np.uint16 and len(stored) == info.val_size
    np.testing.assert_array_equal(stored, holdout.draw(name, info.train_size, info.val_size))
    np.testing.assert_array_equal(holdout.holdout(name, info.train_size).val, stored)


def test_val_sizes_are_the_documented_fractions() -> None:
    sizes = {name: info.val_size for name, info in DATASETS.items()}
    assert sizes["fashion_mnist"] == sizes["cifar10"] == sizes["cifar100"] == 5000
    for name in ("imagenette", "imagenet100"):  # 10 % of the train split
        assert sizes[name] == round(0.1 * DATASETS[name].train_size)
    for name, info in DATASETS.items():
        assert holdout.val_count(name, info.train_size) == info.val_size
        held = holdout.holdout(name, info.train_size)  # imagenet100: drawn, not stored
        assert len(held.val) == info.val_size and len(held.train) == info.train_size - info.val_size
        assert not np.intersect1d(held.val, held.train).size


def _check_disjoint(held: holdout.Holdout, total: int, training: data.TrainingImages) -> None:
    """The training images are exactly the train split minus the validation split, and no
    calibration draw touches the validation split."""
    served = np.asarray(training.indices)
    assert np.array_equal(served, held.train) and training.holdout.digest == held.digest
    assert np.array_equal(np.union1d(held.train, held.val), np.arange(total))
    assert not np.intersect1d(served, held.val).size
    for seed in CALIBRATION_SEEDS:
        drawn = data.calibration_indices(held, 2000, seed)
        assert len(np.unique(drawn)) == 2000 and not np.intersect1d(drawn, held.val).size


@needs_fashion_mnist
def test_real_fashion_mnist_keeps_its_validation_split_apart(tmp_path: Path) -> None:
    root, cache = tmp_path / "no-data-here", tmp_path / "cache"  # the Debian copy is found
    images = read_idx(FASHION_MNIST_DEBIAN / "train-images-idx3-ubyte.gz")[:, None]
    labels = read_idx(FASHION_MNIST_DEBIAN / "train-labels-idx1-ubyte.gz")
    held = data.validation_split("fashion_mnist", root)
    np.testing.assert_array_equal(held.val, np.load(holdout.split_file("fashion_mnist")))
    training = data.train_dataset("fashion_mnist", root, augment=False, download=False)
    assert len(training) == 55000
    _check_disjoint(held, 60000, training)
    spec = DATASETS["fashion_mnist"]
    for position in (0, 1234, 54999):  # what training is served is the image at that position
        image, label = training[position]
        row = held.train[position]
        assert label == labels[row]
        torch.testing.assert_close(image, spec.normalize(torch.from_numpy(images[row])))

    calibration = data.calibration_set("fashion_mnist", 64, 3, root, cache)
    expected = images[data.calibration_indices(held, 64, 3)]
    np.testing.assert_array_equal(calibration.images.numpy(), expected)

    val = data.eval_set("fashion_mnist", root, cache, split="val")
    test = data.eval_set("fashion_mnist", root, cache)
    assert len(val) == spec.val_size and len(test) == spec.test_size and val.key != test.key
    np.testing.assert_array_equal(val.images, images[held.val])
    np.testing.assert_array_equal(val.labels, labels[held.val])
    assert len(list((cache / "eval").glob("*.json"))) == 2  # one cache entry per split
    part = data.eval_set("fashion_mnist", root, cache, limit=100, split="val")
    assert len(part) == 100 and part.key not in (val.key, test.key)
    assert np.isin(part.labels, val.labels).all()


@pytest.fixture(scope="module")
def release_size_cifar10(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """CIFAR-10 python batches with the release's 50,000 train images (random pixels)."""
    root = tmp_path_factory.mktemp("cifar10")
    arrays = write_cifar("cifar10", root, train=50000, test=10)
    return {"root": root, "train": arrays["train"], "test": arrays["test"]}


def _rows(images: np.ndarray) -> dict[bytes, int]:
    return {hashlib.sha256(image.tobytes()).digest(): row for row, image in enumerate(images)}


def test_cifar_files_keep_their_validation_split_apart(
    release_size_cifar10: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    root, cache = release_size_cifar10["root"], tmp_path / "cache"
    images, labels = release_size_cifar10["train"]
    rows = _rows(images)
    assert len(rows) == 50000, "random images collided"
    held = data.validation_split("cifar10", root)
    np.testing.assert_array_equal(held.val, np.load(holdout.split_file("cifar10")))
    _check_disjoint(held, 50000, data.train_dataset("cifar10", root, augment=False))

    val_rows = set(held.val.tolist())
    for seed in (0, 1):  # find each calibration image among the train images by its pixels
        calibration = data.calibration_set("cifar10", 500, seed, root, cache)
        found = {
            rows[hashlib.sha256(image.numpy().tobytes()).digest()] for image in calibration.images
        }
        assert len(found) == 500 and not found & val_rows

    val = data.eval_set("cifar10", root, cache, split="val")
    assert len(val) == DATASETS["cifar10"].val_size
    np.testing.assert_array_equal(val.images, images[held.val])
    np.testing.assert_array_equal(val.labels, labels[held.val])
    test = data.eval_set("cifar10", root, cache, split="test")
    np.testing.assert_array_equal(test.images, release_size_cifar10["test"][0])
    assert val.key != test.key


def test_a_copy_of_another_size_holds_out_the_same_fraction_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    written = write_cifar("cifar10", tmp_path, train=40, test=5)
    images = written["train"][0]
    with caplog.at_level(logging.WARNING):
        val = data.eval_set("cifar10", tmp_path, tmp_path / "cache", split="val")
    assert "holds 40 images, not the release's 50000; holding out 4" in caplog.text
    np.testing.assert_array_equal(val.images, images[holdout.draw("cifar10", 40, 4)])
    training = data.train_dataset("cifar10", tmp_path, augment=False)
    assert len(training) == 36 and not np.intersect1d(training.indices, training.holdout.val).size


def test_an_unknown_eval_split_is_one_line_naming_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError) as caught:
        data.eval_set("cifar10", tmp_path / "nothing", tmp_path / "cache", split="train")
    assert str(caught.value) == "unknown eval split 'train'; expected one of: test, val"
    assert not (tmp_path / "cache").exists()
