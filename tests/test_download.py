"""`python -m sweep.data` against a local HTTP server serving small files in the real release
formats, at the official URL paths (the registry's URLs redirected with --mirror /
PRUNE_SWEEP_MIRROR). Nothing leaves 127.0.0.1."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from data_files import tar_gz, write_cifar, write_fashion_mnist, write_imagenette
from torchvision import datasets as tvd

from sweep import data as cli
from sweep.catalog import datasets as catalog
from sweep.catalog.datasets import DATASET_NAMES, DATASETS
from sweep.core.errors import DataMissingError
from sweep.tasks import data
from sweep.tasks.datasets.download import MIRROR_ENV
from sweep.tasks.datasets.formats import read_idx
from sweep.tasks.datasets.sources import FASHION_MNIST_DEBIAN, SKIP_CHECKSUMS_ENV, SOURCES

DOWNLOADABLE = [name for name in DATASET_NAMES if DATASETS[name].download is not None]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves): a threaded HTTP file server on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _served_path(served: Path, url: str) -> Path:
    """Where the server must hold the file of an official URL."""
    return served / urlsplit(url).path.lstrip("/")


def _publish(name: str, served: Path, work: Path) -> dict:
    """Write small files of `name` in the release format where its official URLs point."""
    download = DATASETS[name].download
    if name == "fashion_mnist":
        arrays = write_fashion_mnist(work / "fashion", train=12, test=5)
        for archive in download.archives:
            target = _served_path(served, archive.url)
            target.parent.mkdir(parents=True, exist_ok=True)
            (work / "fashion" / archive.filename).rename(target)
        return {"test": arrays["t10k"]}
    (archive,) = download.archives
    if name == "imagenette":
        write_imagenette(work / download.folder, per_class=2)
        arrays = {}
    else:
        arrays = write_cifar(name, work, train=10, test=6)
    tar_gz(work / download.folder, _served_path(served, archive.url))
    return arrays


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    """The one line a failed command prints, last on stderr: nothing of the error runs on into
    further lines (progress bars are off: stderr is no terminal)."""
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_catalog_download_facts_are_torchvisions() -> None:
    for name, cls in (("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)):
        download = DATASETS[name].download
        assert [(a.url, a.md5) for a in download.archives] == [(cls.url, cls.tgz_md5)]
        assert download.folder == cls.base_folder and download.torchvision_class == cls.__name__
    fashion = DATASETS["fashion_mnist"].download
    assert [(a.url, a.md5) for a in fashion.archives] == [
        (tvd.FashionMNIST.mirrors[0] + filename, md5)
        for filename, md5 in tvd.FashionMNIST.resources
    ]
    (imagenette,) = DATASETS["imagenette"].download.archives
    assert (imagenette.url, imagenette.md5) == tvd.Imagenette._ARCHIVES["320px"]
    assert set(SOURCES) == set(DATASETS) and data.DATASETS is DATASETS


def test_catalog_imports_no_torch() -> None:
    code = "import sys, sweep.catalog.datasets; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.skipif(
    not (FASHION_MNIST_DEBIAN / "train-labels-idx1-ubyte.gz").is_file(),
    reason=f"real Fashion-MNIST absent from {FASHION_MNIST_DEBIAN}",
)
def test_catalog_split_sizes_match_the_real_fashion_mnist() -> None:
    info = DATASETS["fashion_mnist"]
    train = read_idx(FASHION_MNIST_DEBIAN / "train-labels-idx1-ubyte.gz")
    test = read_idx(FASHION_MNIST_DEBIAN / "t10k-labels-idx1-ubyte.gz")
    assert (len(train), len(test)) == (info.train_size, info.test_size)
    assert read_idx(FASHION_MNIST_DEBIAN / "t10k-images-idx3-ubyte.gz").shape[1:] == (
        info.stored_shape
    )
    assert int(train.max()) + 1 == info.num_classes


@pytest.mark.parametrize("name", DOWNLOADABLE)
def test_download_then_the_loaders_open_it(
    name: str, server, tmp_path: Path, capsys, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = server
    written = _publish(name, served, tmp_path / "work")
    root = tmp_path / "data"
    with caplog.at_level(logging.WARNING):
        code, out, err = _cli(
            capsys, "download", name, "--data-root", root, "--mirror", url, "--skip-checksums"
        )
    assert code == 0, err
    folder = root / DATASETS[name].download.folder
    assert out.strip() == f"{name}: {folder}"
    assert f"fetching {url}/" in err
    assert caplog.text.count("NOT verifying") == len(DATASETS[name].download.archives)
    assert data.find_data(name, root) == folder
    assert _leftovers(root) == [DATASETS[name].download.folder.split("/")[0]]  # no staging left

    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")  # the CIFAR loader re-checks the pickles' MD5s
    evaluation = data.eval_set(name, root, tmp_path / "cache")
    if name == "imagenette":
        assert evaluation.labels.tolist() == [c for c in range(10) for _ in range(2)]
    else:
        images, labels = written["test"]
        np.testing.assert_array_equal(evaluation.images.reshape(images.shape), images)
        np.testing.assert_array_equal(evaluation.labels, labels)
    assert len(data.calibration_set(name, 4, 0, root, tmp_path / "cache")) == 4

    nowhere = "http://127.0.0.1:9"  # the discard port: a second download must not connect
    assert data.download(name, root, mirror=nowhere) == folder


def test_checksums_are_verified_unless_skipped(
    server, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = server
    _publish("cifar10", served, tmp_path / "work")
    root = tmp_path / "data"
    code, _, err = _cli(capsys, "download", "cifar10", "--data-root", root, "--mirror", url)
    assert code == 2
    line = _error_line(err)
    assert "cifar-10-python.tar.gz has MD5" in line and "not the official" in line
    assert "--skip-checksums" in line
    assert not root.exists()  # the data root this download made is gone again

    (archive,) = DATASETS["cifar10"].download.archives
    served_md5 = hashlib.md5(_served_path(served, archive.url).read_bytes()).hexdigest()
    matching = dataclasses.replace(archive, md5=served_md5)  # as if these were the official bytes
    download = dataclasses.replace(DATASETS["cifar10"].download, archives=(matching,))
    monkeypatch.setitem(catalog.DATASETS, "cifar10",
                        dataclasses.replace(DATASETS["cifar10"], download=download))  # fmt: skip
    monkeypatch.setenv(MIRROR_ENV, url)  # the environment variable names the mirror
    code, _, err = _cli(capsys, "download", "cifar10", "--data-root", root)
    assert code == 0, err
    assert data.find_data("cifar10", root) == root / "cifar-10-batches-py"


def _no_server() -> str:
    """The URL of a port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown name", "unknown dataset 'cifar-10'; expected one of: fashion_mnist"),
        ("not downloadable", "imagenet100 data not found under"),
        ("bad mirror", "mirror 'ftp://127.0.0.1' is not an http(s) URL"),
        ("unwritable root", "is not writable"),
        ("404", "/~kriz/cifar-10-python.tar.gz failed: HTTP 404"),
        ("last file 404", "/t10k-labels-idx1-ubyte.gz failed: HTTP 404"),
        ("no server", "failed ([Errno 111] Connection refused); check the network"),
        ("not an archive", "cifar-10-python.tar.gz is not a readable tar archive (neither gzip"),
        ("truncated archive", "/~kriz/cifar-10-python.tar.gz is not a readable tar archive ("),
        ("wrong archive", "holds cifar-100-python, not cifar-10-batches-py/"),
        ("partial folder", "cifar-10-batches-py exists but does not hold the complete download"),
    ],
)
def test_bad_inputs_fail_in_one_line_and_leave_nothing(
    case: str, expected: str, server, tmp_path: Path, capsys
) -> None:
    url, served = server
    root, name, mirror = tmp_path / "data", "cifar10", url
    cifar10_archive = _served_path(served, DATASETS["cifar10"].download.archives[0].url)
    if case == "unknown name":
        name = "cifar-10"
    elif case == "not downloadable":
        name = "imagenet100"
    elif case == "bad mirror":
        mirror = "ftp://127.0.0.1"
    elif case == "unwritable root":
        (tmp_path / "a-file").write_text("")
        root = tmp_path / "a-file" / "data"  # even root cannot create a folder inside a file
    elif case == "last file 404":  # three of Fashion-MNIST's four files arrive first
        name = "fashion_mnist"
        _publish(name, served, tmp_path / "work")
        _served_path(served, DATASETS[name].download.archives[-1].url).unlink()
    elif case == "no server":
        mirror = _no_server()
    elif case == "not an archive":
        cifar10_archive.parent.mkdir(parents=True)
        cifar10_archive.write_bytes(b"<html>not found</html>")
    elif case == "truncated archive":
        write_cifar("cifar10", tmp_path / "work", train=5, test=5)
        tar_gz(tmp_path / "work" / "cifar-10-batches-py", cifar10_archive)
        cifar10_archive.write_bytes(
            cifar10_archive.read_bytes()[: cifar10_archive.stat().st_size // 2]
        )
    elif case == "wrong archive":
        write_cifar("cifar100", tmp_path / "work", train=5, test=5)
        tar_gz(tmp_path / "work" / "cifar-100-python", cifar10_archive)
    elif case == "partial folder":
        (root / "cifar-10-batches-py").mkdir(parents=True)
        (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    before = _leftovers(root), root.exists()
    code, out, err = _cli(
        capsys, "download", name, "--data-root", root, "--mirror", mirror, "--skip-checksums"
    )
    assert code == 2 and out == ""
    assert expected in _error_line(err)
    assert (_leftovers(root), root.exists()) == before  # nothing half-written, no staging


def test_list_shows_where_each_dataset_is_and_how_to_get_it(tmp_path: Path, capsys) -> None:
    write_cifar("cifar10", tmp_path, train=5, test=2)
    code, out, _ = _cli(capsys, "list", "--data-root", tmp_path)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(DATASET_NAMES)
    assert str(tmp_path / "cifar-10-batches-py") in rows["cifar10"]
    assert f"python -m sweep.data download cifar100 --data-root {tmp_path}" in rows["cifar100"]
    assert "missing" in rows["cifar100"] and "cannot be downloaded" in rows["imagenet100"]


def test_training_data_downloads_through_the_mirror(
    server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path `python -m sweep.pretrain` takes: train_dataset(download=True) on a missing set."""
    url, served = server
    written = _publish("cifar10", served, tmp_path / "work")
    monkeypatch.setenv(MIRROR_ENV, url)
    monkeypatch.setenv(SKIP_CHECKSUMS_ENV, "1")
    train = data.train_dataset("cifar10", tmp_path / "data", augment=False)
    assert len(train) == 9 and train[3][1] == written["train"][1][train.indices[3]]  # 1 held out

    monkeypatch.setenv(MIRROR_ENV, _no_server())
    with pytest.raises(DataMissingError, match=r"check the network.*; or by hand: extract"):
        data.train_dataset("cifar100", tmp_path / "data")
