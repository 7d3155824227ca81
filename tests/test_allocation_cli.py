"""``python -m sweep.allocation``: output shapes, checkpoints, and every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sweep.allocation import main
from sweep.tasks.models import build_model
from sweep.tasks.prune import allocate, prunable_layers

BASE = ["--arch", "resnet20", "--num-classes", "10", "--input-size", "32"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*BASE, *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args: str) -> dict:
    code, out, err = run(capsys, *args, "--format", "json")
    assert (code, err) == (0, "")
    return json.loads(out)


def test_json_shape_order_and_exact_total(capsys):
    result = run_json(capsys, "--allocation", "lamp", "--sparsity", "0.9")
    assert list(result) == ["allocation", "requested_sparsity", "achieved_sparsity", "layers"]
    assert (result["allocation"], result["requested_sparsity"]) == ("lamp", 0.9)
    model = build_model("resnet20", 10)
    assert [layer["name"] for layer in result["layers"]] == [n for n, _ in prunable_layers(model)]
    assert all(
        list(layer) == ["name", "shape", "numel", "kept", "density"] for layer in result["layers"]
    )
    numel = sum(layer["numel"] for layer in result["layers"])
    kept = sum(layer["kept"] for layer in result["layers"])
    assert kept == round(0.1 * numel)
    assert result["achieved_sparsity"] == pytest.approx(1 - kept / numel)
    assert result["layers"][0] == {
        "name": "conv1",
        "shape": [16, 3, 3, 3],
        "numel": 432,
        "kept": result["layers"][0]["kept"],
        "density": result["layers"][0]["kept"] / 432,
    }


def test_seed_changes_lamp_but_not_erk(capsys):
    def counts(allocation: str, seed: str) -> list[int]:
        result = run_json(capsys, "--allocation", allocation, "--sparsity", "0.9", "--seed", seed)
        return [layer["kept"] for layer in result["layers"]]

    assert counts("lamp", "1") == counts("lamp", "1")
    assert counts("lamp", "1") != counts("lamp", "2")
    assert counts("erk", "1") == counts("erk", "2")


def test_table_marks_forced_dense_layers(capsys):
    code, out, err = run(capsys, "--allocation", "erk", "--sparsity", "0.9")
    assert (code, err) == (0, "")
    names = [n for n, _ in prunable_layers(build_model("resnet20", 10))]
    rows = [line for line in out.splitlines() if line.split()[:1] and line.split()[0] in names]
    assert len(rows) == len(names)
    marked = [row.split()[0] for row in rows if row.endswith(" *")]
    # raw scores: fc (10+64)/640 = .116 and the stem conv (16+3+3+3)/432 = .058 lead; option-A
    # shortcuts have no weights to prune
    assert marked == ["conv1", "fc"]
    assert all(row.endswith("1.0000 *") for row in rows if row.endswith("*"))
    assert "* forced dense" in out


def test_uniform_plus_keeps_the_stem_dense_and_caps_the_classifier(capsys):
    result = run_json(capsys, "--allocation", "uniform_plus", "--sparsity", "0.98")
    layers = {layer["name"]: layer for layer in result["layers"]}
    assert layers["conv1"]["kept"] == layers["conv1"]["numel"] == 432
    assert layers["fc"]["kept"] == 128  # 640 weights at most 80 % sparse: capped at 0.98
    numel = sum(layer["numel"] for layer in result["layers"])
    assert sum(layer["kept"] for layer in result["layers"]) == round(0.02 * numel)
    middle = {layer["density"] for name, layer in layers.items() if name not in ("conv1", "fc")}
    assert max(middle) - min(middle) < 0.01  # one shared density, up to integer rounding


def test_checkpoint_weights_are_the_ones_pruned(capsys, tmp_path):
    torch.manual_seed(7)
    model = build_model("resnet20", 10)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    result = run_json(
        capsys, "--allocation", "lamp", "--sparsity", "0.95", "--checkpoint", str(path)
    )
    assert {layer["name"]: layer["kept"] for layer in result["layers"]} == allocate(
        model, "lamp", 0.95
    )


def test_checkpoint_that_does_not_fit_names_the_first_bad_key(capsys, tmp_path):
    path = tmp_path / "cifar100.pt"
    torch.save(build_model("resnet20", 100).state_dict(), path)
    code, out, err = run(
        capsys, "--allocation", "erk", "--sparsity", "0.9", "--checkpoint", str(path)
    )
    assert (code, out) == (2, "")
    assert "'fc.weight' has shape [100, 64]; expected [10, 64]" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allocation", "erk", "--sparsity", "nan"], "sparsity nan is not allowed"),
        (["--allocation", "erk", "--sparsity", "1"], "sparsity 1.0 is not allowed; expected"),
        (["--allocation", "erk", "--sparsity", "-0.1"], "sparsity -0.1 is not allowed"),
        (["--allocation", "erk", "--sparsity", "inf"], "sparsity inf is not allowed"),
        (["--allocation", "erk", "--sparsity", "abc"], "invalid float value: 'abc'"),
        (["--allocation", "ERK", "--sparsity", "0.5"], "unknown allocation 'ERK'; expected one"),
        (["--allocation", "erk"], "required: --sparsity"),
        (["--allocation", "erk", "--sparsity", "0.5", "--format", "xml"], "invalid choice: 'xml'"),
        (["--allocation", "erk", "--sparsity", "0.5", "--in-channels", "0"], "--in-channels 0"),
        (["--allocation", "erk", "--sparsity", "0.5", "--seed", "1.5"], "invalid int value: '1.5'"),
        (["--allocation", "erk", "--sparsity", "0.5", "--bogus", "1"], "unrecognized arguments"),
        (
            ["--allocation", "erk", "--sparsity", "0.5", "--checkpoint", "/nonexistent.pt"],
            "checkpoint /nonexistent.pt not found",
        ),
        (
            ["--allocation", "erk", "--sparsity", "0.5", "--checkpoint", "."],
            "checkpoint . not found; expected a state_dict file",
        ),
        # these replace BASE's values (argparse keeps the last)
        (["--allocation", "erk", "--sparsity", "0.5", "--num-classes", "0"], "--num-classes 0"),
        (["--allocation", "erk", "--sparsity", "0.5", "--input-size", "-3"], "--input-size -3"),
        (
            ["--allocation", "erk", "--sparsity", "0.5", "--input-size", "224"],
            "arch 'resnet20' has no layout for 224 px inputs",
        ),
        (["--allocation", "erk", "--sparsity", "0.5", "--arch", "vgg"], "unknown arch 'vgg'"),
        (
            ["--allocation", "uniform_plus", "--sparsity", "0.999"],
            "sparsity 0.999 is not allowed for uniform_plus on this model",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *args)
    assert (code, out) == (2, "")
    assert message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())


def test_a_file_that_is_not_a_state_dict(capsys, tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    code, _, err = run(
        capsys, "--allocation", "erk", "--sparsity", "0.5", "--checkpoint", str(path)
    )
    assert code == 2 and "not a state_dict" in err and err.count("\n") == 1


def test_help_explains_the_allocations(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    words = ("erk", "lamp", "uniform", "global", "uniform_plus", "round((1 - S) * N)")
    for word in (*words, "--checkpoint"):
        assert word in out


def test_module_entry_point_as_a_user_runs_it():
    command = [sys.executable, "-m", "sweep.allocation", *BASE, "--allocation", "global"]
    ok = subprocess.run(
        [*command, "--sparsity", "0.5", "--format", "json"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["allocation"] == "global"
    bad = subprocess.run([*command, "--sparsity", "nan"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        "error: sparsity nan is not allowed; expected a number in [0, 1) "
        "(the fraction of prunable weights set to zero)"
    ]
