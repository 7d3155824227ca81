"""Bad input to every command: one line on stderr naming the bad value, exit code 2, and nothing
written (each test runs in an empty working directory and compares its files before and after).

The CLIs' `main(argv)` run in-process; a launch must stop before Ray starts. Cases already pinned
by a command's own test file (test_launch_bad_inputs, test_train, test_allocation_cli,
test_regimes, test_report, test_download) are not repeated here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import ray
from support import needs_fashion_mnist, write_grid

from analysis import regimes, report
from sweep import allocation, launch, pretrain
from sweep import data as data_cli
from sweep.core.errors import UserError
from sweep.plan.grid import DEMO, checkpoints_needed, validate

Main = Callable[[Sequence[str]], int]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, so that default output folders would land in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a folder: an empty new one counts too)."""
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else None
        for path in root.rglob("*")
    }


def _refused(main: Main, argv: Sequence[str], root: Path, capsys: pytest.CaptureFixture) -> str:
    """Run a CLI that must refuse its input; its one stderr line, once checked that it exited
    with 2, printed nothing else, wrote nothing under `root` and started no Ray."""
    before = _tree(root)
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and captured.out == "", captured
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert _tree(root) == before and not ray.is_initialized()
    return lines[0]


def _launch_argv(grid: Path | str, *flags: str) -> list[str]:
    return ["--grid", str(grid), "--store", "out", "--checkpoints", "none", *flags]


# --- grid files -----------------------------------------------------------------------------

SCALAR_FOR_LIST = {
    "seeds: 0": ({"seeds": 0}, "'seeds' must be a non-empty list; got 0"),
    "sparsities: 0.9": ({"sparsities": 0.9}, "got 0.9"),
    "repairs: bn_recal": ({"repairs": "bn_recal"}, "got 'bn_recal'"),
    "replicates: 0": ({"replicates": 0}, "'replicates' must be a non-empty list; got 0"),
    "allocations: erk": ({"allocations": "erk"}, "got 'erk'"),
    "datasets: fashion_mnist": ({"datasets": "fashion_mnist"}, "got 'fashion_mnist'"),
}
OUT_OF_RANGE = {
    "seed beyond the store's int64": ({"seeds": [2**63]}, "seed 9223372036854775808"),
    "negative seed": ({"seeds": [-1]}, "seed -1 must be a non-negative integer"),
    "replicate beyond a checkpoint seed": ({"replicates": [2**32]}, "replicate 4294967296"),
    "replicate beyond the store's int64": ({"replicates": [2**63]}, "9223372036854775808"),
}
REPEATED = {
    "replicate twice": ({"replicates": [0, 0]}, "replicates lists 0 more than once"),
    "seed twice": ({"seeds": [1, 2, 1]}, "seeds lists 1 more than once"),
    "sparsity twice": ({"sparsities": [0.5, 0.9, 0.5]}, "sparsities lists 0.5 more than once"),
    "sparsity twice once rounded": ({"sparsities": [0.5, 0.5000000001]}, "sparsities lists 0.5"),
    "allocation twice": ({"allocations": ["erk", "erk"]}, "allocations lists 'erk' more"),
    "repair twice": ({"repairs": ["bn_recal", "bn_recal"]}, "repairs lists 'bn_recal' more"),
    "dataset twice": ({"datasets": ["fashion_mnist"] * 2}, "datasets lists 'fashion_mnist'"),
    "arch twice": ({"archs": ["resnet20", "resnet20"]}, "archs lists 'resnet20' more"),
}
BAD_VALUES = {
    "empty sparsities": ({"sparsities": []}, "sparsities must be a list of numbers"),
    "empty repairs": ({"repairs": []}, "'repairs' must be a non-empty list; got []"),
    "empty seeds": ({"seeds": []}, "'seeds' must be a non-empty list; got []"),
    "sparsity NaN": ({"sparsities": [float("nan")]}, "sparsity nan is outside [0, 1)"),
    "sparsity infinite": ({"sparsities": [float("inf")]}, "sparsity inf is outside [0, 1)"),
    "sparsity above 1": ({"sparsities": [1.5]}, "sparsity 1.5 is outside [0, 1)"),
    "sparsity as text": ({"sparsities": ["0.5"]}, "got ['0.5']"),
    "sparsity as bool": ({"sparsities": [True]}, "got [True]"),
    "sparsity range with step 0": (
        {"sparsities": {"start": 0.5, "stop": 0.9, "step": 0}},
        "'step': 0",
    ),
    "sparsity range backwards": (
        {"sparsities": {"start": 0.9, "stop": 0.5, "step": 0.1}},
        "'start': 0.9",
    ),
    "sparsity range of text": (
        {"sparsities": {"start": "a", "stop": 0.5, "step": 0.1}},
        "sparsities.start must be a number; got 'a'",
    ),
    "sparsity range of a million points": (
        {"sparsities": {"start": 0.0, "stop": 0.99, "step": 1e-6}},
        "at most 1000 steps",
    ),
    "calib_size negative": ({"calib_size": -5}, "calib_size -5"),
    "calib_size fractional": ({"calib_size": 1.5}, "calib_size must be an integer; got 1.5"),
    "calib_size bool": ({"calib_size": True}, "calib_size must be an integer; got True"),
    "calib_size text": ({"calib_size": "many"}, "got 'many'"),
    "eval_limit negative": ({"eval_limit": -1}, "eval_limit -1"),
    "eval_limit text": ({"eval_limit": "all"}, "eval_limit must be an integer; got 'all'"),
    "resources as text": ({"resources": {"cpus_per_trial": "two"}}, "got 'two'"),
    "resources NaN": ({"resources": {"gpus_per_trial": float("nan")}}, "gpus_per_trial nan"),
    "resources a list": ({"resources": [1]}, "got [1]"),
    "repair params a list": ({"repairs": [{"method": "bn_recal", "params": [1]}]}, "[1]"),
    "repair param named by a number": (
        {"repairs": [{"method": "channel_var_shrink", "params": {1: 0.5}}]},
        "{1: 0.5}",
    ),
    "repair with an unknown key": ({"repairs": [{"method": "none", "tau": 1}]}, "'tau': 1"),
    "repair without method": ({"repairs": [{"params": {}}]}, "{'params': {}}"),
    "param of another method": (
        {"repairs": [{"method": "bn_recal", "params": {"tau": 0.5}}]},
        "tau",
    ),
    "dataset a number": ({"datasets": [7]}, "unknown dataset '7'"),
    "arch too small for the images": (
        {"datasets": ["imagenette"], "archs": ["resnet20"]},
        "imagenette × resnet20",
    ),
    "name with a path": ({"name": "../elsewhere"}, "name '../elsewhere'"),
    "empty name": ({"name": ""}, "name ''"),
    "pairs beside datasets": (
        {"pairs": [["fashion_mnist", "resnet20"]]},
        "pairs given together with archs and datasets",
    ),
    "unreachable uniform_plus sparsity": (
        {"allocations": ["erk", "uniform_plus"], "sparsities": [0.5, 0.999, 0.9999]},
        "sparsity 0.999 is not allowed for uniform_plus",
    ),
}
GRID_FIELDS = SCALAR_FOR_LIST | OUT_OF_RANGE | REPEATED | BAD_VALUES


@pytest.mark.parametrize("case", sorted(GRID_FIELDS))
def test_a_bad_grid_field_is_one_line_naming_it(case: str, workdir: Path, capsys):
    fields, named = GRID_FIELDS[case]
    grid = write_grid(workdir / "g.yaml", **fields)
    assert named in _refused(launch.main, _launch_argv(grid), workdir, capsys)


GRID_TEXTS = {
    "a list": ("- fashion_mnist\n", "must hold a mapping of fields; got ['fashion_mnist']"),
    "empty": ("", "must hold a mapping of fields; got None"),
    "a number": ("42\n", "got 42"),
    "unknown numeric key": ("1: x\ndatasets: [fashion_mnist]\n", "unknown field(s) ['1']"),
    "unknown keys of two types": ("1: x\nseed: 0\n", "unknown field(s) ['1', 'seed']"),
    "not UTF-8": (b"datasets: [\xff\xfe]\n", "cannot be read (not UTF-8 text)"),
    "a pair of three": (
        "pairs: [[fashion_mnist, resnet20, x]]\nallocations: [erk]\nsparsities: [0.5]\n"
        "repairs: [none]\n",
        "a pair is [dataset, arch]; got ['fashion_mnist', 'resnet20', 'x']",
    ),
    "pairs a scalar": ("pairs: fashion_mnist\n", "'pairs' must be a non-empty list"),
}


@pytest.mark.parametrize("case", sorted(GRID_TEXTS))
def test_a_grid_file_of_the_wrong_shape_is_one_line(case: str, workdir: Path, capsys):
    text, named = GRID_TEXTS[case]
    grid = workdir / "g.yaml"
    grid.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert named in _refused(launch.main, _launch_argv(grid), workdir, capsys)


def test_a_grid_path_that_is_a_directory_is_named(workdir: Path, capsys):
    (workdir / "folder.yaml").mkdir()
    line = _refused(launch.main, _launch_argv("folder.yaml"), workdir, capsys)
    assert "'folder.yaml' is a directory" in line


def test_a_grid_object_listing_a_replicate_twice_is_refused():
    """The notebook API validates too: a replicate twice would train one checkpoint twice."""
    with pytest.raises(UserError, match="replicates lists 1 more than once"):
        validate(dataclasses.replace(DEMO, replicates=(0, 1, 1)))
    assert len(set(checkpoints_needed(DEMO))) == len(checkpoints_needed(DEMO))


@needs_fashion_mnist
def test_a_calib_size_beyond_the_calibration_pool_stops_the_launch(workdir: Path, capsys):
    grid = write_grid(workdir / "g.yaml", calib_size=60000)
    line = _refused(launch.main, _launch_argv(grid), workdir, capsys)
    assert "calib_size 60000 exceeds the 55000 train images of fashion_mnist" in line


@needs_fashion_mnist
def test_calib_size_and_weight_ranked_allocations_are_not_refused_where_they_do_not_apply(
    workdir: Path, capsys
):
    """No calibrating repair: calib_size is unused; global and lamp reach any sparsity."""
    grid = write_grid(
        workdir / "g.yaml",
        repairs=["none"],
        calib_size=10**9,
        allocations=["global", "lamp"],
        sparsities=[0.999],
    )
    assert launch.main(_launch_argv(grid, "--dry-run")) == 0
    assert capsys.readouterr().err == ""


# --- launch flags ---------------------------------------------------------------------------

LAUNCH_FLAGS = {
    "--eval-precision fp16": (["--eval-precision", "fp16"], "'fp16'"),
    "--gpus-per-trial not a number": (["--gpus-per-trial", "x"], "'x'"),
    "--max-concurrent negative": (["--max-concurrent", "-3"], "--max-concurrent -3"),
    "--max-concurrent fractional": (["--max-concurrent", "1.5"], "'1.5'"),
    "--retries not a number": (["--retries", "few"], "'few'"),
    "--cells-per-trial 0": (["--cells-per-trial", "0"], "--cells-per-trial 0"),
    "--cells-per-trial negative": (["--cells-per-trial", "-2"], "--cells-per-trial -2"),
    "--pretrain always": (["--pretrain", "always"], "'always'"),
    "--format yaml": (["--format", "yaml", "--dry-run"], "'yaml'"),
    "unknown flag": (["--sparsity", "0.5"], "--sparsity"),
}


@pytest.mark.parametrize("case", sorted(LAUNCH_FLAGS))
def test_a_bad_launch_flag_is_one_line_naming_it(case: str, workdir: Path, capsys):
    flags, named = LAUNCH_FLAGS[case]
    assert named in _refused(launch.main, _launch_argv("demo", *flags), workdir, capsys)


def test_a_launch_without_a_grid_names_the_flag(workdir: Path, capsys):
    assert "--grid" in _refused(launch.main, ["--store", "out"], workdir, capsys)


# --- the other commands ---------------------------------------------------------------------

FASHION = ["--dataset", "fashion_mnist", "--arch", "resnet20", "--checkpoints", "ckpt"]
ALLOCATE = ["--arch", "resnet20", "--num-classes", "10", "--input-size", "32"]
OTHER_COMMANDS = {
    "pretrain --epochs fractional": (pretrain.main, [*FASHION, "--epochs", "1.5"], "'1.5'"),
    "pretrain --batch-size negative": (pretrain.main, [*FASHION, "--batch-size", "-1"], "-1"),
    "pretrain --seed beyond 32 bits": (
        pretrain.main,
        [*FASHION, "--seed", str(2**32)],
        "seed 4294967296 is not allowed",
    ),
    "pretrain --lr negative": (pretrain.main, [*FASHION, "--lr", "-0.1"], "learning rate -0.1"),
    "pretrain --threads negative": (pretrain.main, [*FASHION, "--threads", "-4"], "threads -4"),
    "allocation --num-classes negative": (
        allocation.main,
        [*ALLOCATE, "--num-classes", "-1", "--allocation", "erk", "--sparsity", "0.5"],
        "--num-classes -1",
    ),
    "allocation --allocation empty": (
        allocation.main,
        [*ALLOCATE, "--allocation", "", "--sparsity", "0.5"],
        "unknown allocation ''",
    ),
    "allocation --sparsity 90%": (
        allocation.main,
        [*ALLOCATE, "--allocation", "erk", "--sparsity", "90%"],
        "'90%'",
    ),
    "data: unknown command": (data_cli.main, ["fetch", "cifar10"], "'fetch'"),
    "data download without a name": (data_cli.main, ["download"], "name"),
    "data download of an unknown name": (
        data_cli.main,
        ["download", "mnist", "--data-root", "data"],
        "unknown dataset 'mnist'",
    ),
    "regimes --tau negative": (regimes.main, ["store", "--tau", "-0.5"], "tau -0.5"),
    "regimes --tau 1": (regimes.main, ["store", "--tau", "0.5,1"], "tau 1 is outside (0, 1)"),
    "regimes --confidence NaN": (regimes.main, ["store", "--confidence", "nan"], "nan"),
    "regimes on a missing store": (regimes.main, ["store", "--output", "r.md"], "'store'"),
    "report --tau empty": (report.main, ["store", "--tau", ""], "tau ''"),
    "report --confidence below 0.5": (report.main, ["store", "--confidence", "0.2"], "0.2"),
    "report on a missing store": (report.main, ["store", "-o", "r.html"], "'store'"),
}


@pytest.mark.parametrize("case", sorted(OTHER_COMMANDS))
def test_a_bad_argument_of_another_command_is_one_line_naming_it(case: str, workdir: Path, capsys):
    main, argv, named = OTHER_COMMANDS[case]
    assert named in _refused(main, argv, workdir, capsys)
