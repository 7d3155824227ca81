"""Canonical trial identity: two spellings of one trial are one key; different trials never are."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweep.plan import identity
from sweep.plan.grid import expand, load_grid
from sweep.plan.identity import RepairSpec, TrialConfig
from sweep.results.rows import build_row, config_of_row

DIGEST = {("fashion_mnist", "resnet20", 0): "a" * 64}


def _grid_file(path: Path, repairs: list, **fields: object) -> str:
    grid = {
        "datasets": ["fashion_mnist"], "archs": ["resnet20"], "allocations": ["erk"],
        "sparsities": [0.9], "repairs": repairs, "seeds": [0, 1], "calib_size": 64,
    } | fields  # fmt: skip
    path.write_text(yaml.safe_dump(grid))
    return str(path)


def _trial(**fields: object) -> TrialConfig:
    values = {
        "dataset": "fashion_mnist", "arch": "resnet20", "allocation": "erk", "sparsity": 0.9,
        "repair": "channel_var_shrink", "repair_params": {}, "seed": 0, "calib_size": 64,
        "eval_limit": None, "checkpoint_sha256": "a" * 64,
    } | fields  # fmt: skip
    return TrialConfig(**values)


def test_the_readmes_two_spellings_of_the_default_repair_are_one_key(tmp_path: Path):
    short = expand(load_grid(_grid_file(tmp_path / "a.yaml", ["channel_var_shrink"])), DIGEST)
    spelled = load_grid(
        _grid_file(
            tmp_path / "b.yaml",
            [{"method": "channel_var_shrink", "params": {"recal_after": False}}],
        )
    )
    assert [t.key for t in short] == [t.key for t in expand(spelled, DIGEST)]
    assert {t.repair_variant for t in short} == {"channel_var_shrink"}


def test_both_spellings_in_one_grid_expand_to_one_trial_per_seed(tmp_path: Path):
    repairs = ["channel_var_shrink", {"method": "channel_var_shrink", "params": {"tau": 0.25}}]
    trials = expand(load_grid(_grid_file(tmp_path / "g.yaml", repairs)), DIGEST)
    assert len(trials) == 2 and len({t.key for t in trials}) == 2  # seeds 0 and 1


def test_two_parameter_variants_are_two_trials_with_two_names(tmp_path: Path):
    repairs = ["channel_var_shrink", {"method": "channel_var_shrink", "params": {"tau": 0.5}}]
    trials = expand(load_grid(_grid_file(tmp_path / "g.yaml", repairs, seeds=[0])), DIGEST)
    assert len({t.key for t in trials}) == 2
    assert sorted(t.repair_variant for t in trials) == [
        "channel_var_shrink",
        "channel_var_shrink[tau=0.5]",
    ]


def test_a_repair_without_calibration_ignores_seed_and_calib_size():
    a = _trial(repair="none", seed=0, calib_size=512)
    b = _trial(repair="none", seed=2, calib_size=1024)
    assert a.key == b.key and (a.seed, a.calib_size) == (0, 0)
    assert _trial(repair="bn_recal", seed=0).key != _trial(repair="bn_recal", seed=1).key
    assert _trial(repair="bn_recal", calib_size=32).key != _trial(repair="bn_recal").key


def test_an_eval_limit_covering_the_test_split_is_the_whole_split():
    whole = _trial(eval_limit=None)
    assert _trial(eval_limit=10_000).key == whole.key  # Fashion-MNIST's test split
    assert _trial(eval_limit=50_000).key == whole.key
    assert _trial(eval_limit=2_000).key != whole.key


def test_an_eval_limit_covering_the_validation_split_is_the_whole_split():
    whole = _trial(eval_split="val", eval_limit=None)
    assert _trial(eval_split="val", eval_limit=5_000).key == whole.key
    assert _trial(eval_split="val", eval_limit=4_999).key != whole.key
    assert _trial(eval_split="test", eval_limit=5_000).key != _trial(eval_split="test").key


def test_integer_and_float_spellings_of_a_parameter_are_one_key():
    assert _trial(repair_params={"tau": 1}).key == _trial(repair_params={"tau": 1.0}).key
    assert _trial(sparsity=0.9).key == _trial(sparsity=0.9000000001).key


def test_every_identity_field_changes_the_key():
    base = _trial()
    changed = [
        _trial(dataset="cifar10"), _trial(arch="resnet32"), _trial(allocation="lamp"),
        _trial(sparsity=0.91), _trial(repair="channel_var"), _trial(repair_params={"tau": 0.5}),
        _trial(seed=1), _trial(calib_size=32), _trial(eval_limit=100),
        _trial(checkpoint_sha256="b" * 64), _trial(replicate=1), _trial(eval_split="val"),
    ]  # fmt: skip
    keys = {t.key for t in changed}
    assert base.key not in keys and len(keys) == len(changed)


def test_the_key_schema_version_is_part_of_the_key(monkeypatch: pytest.MonkeyPatch):
    before = _trial().key
    monkeypatch.setattr(identity, "KEY_SCHEMA", identity.KEY_SCHEMA + 1)
    assert _trial().key != before


def test_a_config_survives_the_round_trip_through_tune_unchanged():
    trial = _trial(repair_params={"tau": 0.5})
    again = TrialConfig.from_dict(trial.to_dict())
    assert again == trial and again.key == trial.key


def test_variant_names_spell_only_non_default_parameters():
    assert RepairSpec.create("channel_var_shrink", {"recal_after": False}).variant == (
        "channel_var_shrink"
    )
    spec = RepairSpec.create("channel_var_shrink", {"points": "logits", "recal_after": True})
    assert spec.variant == "channel_var_shrink[points=logits,recal_after=true]"
    assert RepairSpec.create("none").variant == "none"


def test_keys_of_every_built_in_repair_are_those_of_existing_stores():
    """Pinned as stores written before the catalog held the repair defaults have them: a change
    here would orphan every stored row."""
    pinned = {
        "none": "de5a554a7885fa695bf8147a23a9542435e3e14312364fc2ae602518ac33f7c1",
        "bn_recal": "9a17f24bca4efb35e5c0330bba19429f353c386ff6fdd3ec2efbb4d6b913653d",
        "layer_var": "07bfea87561feeed395b660aaa3fef3b5c72d5018585df60770c43f9d253f819",
        "channel_var": "f652f5bea75c71b707673bf1e6e641e126cb830f57c238ba224fb85c7ae55d45",
        "channel_var_shrink": "7e445f23c024eee4322c65f88b3d50faed41b62672c180e6e745e59963bc4684",
        "obs_reconstruct": "55b5e42074c7c84ab4a59208b5864e40f8310655505935ee3cae2f04be46ae6b",
        "adaprune": "03c06882a9ccb015ea01d8e73255960fceec1f5bfa79210e6d971480d219d666",
    }
    assert {method: _trial(repair=method, seed=1).key for method in pinned} == pinned


def test_a_row_names_its_trial_again():
    """The identity columns are the trial's fields: a row gives back the config it was built from
    (its eval_limit from the images it evaluated), key and all."""
    config = TrialConfig(
        dataset="fashion_mnist", arch="resnet20", allocation="lamp", sparsity=0.9,
        repair="channel_var_shrink", repair_params={"tau": 0.5}, seed=2, calib_size=256,
        eval_limit=1000, checkpoint_sha256="a" * 64, replicate=1, eval_split="val",
        eval_precision="bf16",
    )  # fmt: skip
    row = build_row(config, {"eval_size": 1000}, grid="g", attempts=1)
    again = config_of_row(row)
    assert again == config and again.key == config.key == row["trial_key"]
