"""The torch-free catalog: one lookup and one error shape for every family, the torch side
implementing exactly the catalog's names, plugins adding both, and planning without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.definitions import (
    ACTIVATION,
    RECONSTRUCTION,
    is_deterministic,
    repair_role,
    variant_order,
)
from sweep.catalog.allocations import ALLOCATIONS
from sweep.catalog.archs import ARCHS
from sweep.catalog.datasets import DATASETS
from sweep.catalog.registry import Implementations, Registry
from sweep.catalog.repair_parameters import NoParams
from sweep.catalog.repairs import NO_REPAIR, REPAIRS, ROLES, RepairInfo
from sweep.core.errors import UnknownNameError, UserError
from sweep.plan.identity import TrialConfig
from sweep.tasks.allocations import ALLOCATORS
from sweep.tasks.repair import REPAIR_METHODS, RepairMethod, register_repair

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = {"dataset": DATASETS, "arch": ARCHS, "allocation": ALLOCATIONS, "repair method": REPAIRS}


@pytest.mark.parametrize("kind", FAMILIES)
def test_every_family_reports_an_unknown_name_in_one_shape(kind: str):
    registry = FAMILIES[kind]
    first = next(iter(registry))
    assert registry[first].name == first
    for bad in ("nope", ["unhashable"]):
        with pytest.raises(UnknownNameError) as caught:
            registry[bad]
        assert str(caught.value) == (
            f"unknown {kind} {bad!r}; expected one of: {', '.join(registry)}"
        )
    with pytest.raises(UserError, match=f"{kind} '{first}' is already registered"):
        registry.register(first, registry[first])


def test_allocations_and_repairs_are_listed_in_display_order():
    assert tuple(ALLOCATIONS) == ("erk", "lamp", "uniform", "uniform_plus", "global")
    assert tuple(REPAIRS)[:7] == (
        "none", "bn_recal", "layer_var", "channel_var", "channel_var_shrink",
        "obs_reconstruct", "adaprune",
    )  # fmt: skip
    assert all(info.summary for info in ALLOCATIONS.values())
    assert all(info.role in ROLES for info in REPAIRS.values())


def test_the_torch_side_implements_exactly_the_catalog():
    for implementations in (ALLOCATORS, REPAIR_METHODS):
        assert implementations.unimplemented() == ()
        assert list(implementations) == list(implementations.catalog)
    for name, method in REPAIR_METHODS.items():
        assert method.params is REPAIRS[name].params, name
        assert method.uses_calibration == REPAIRS[name].uses_calibration


def test_an_implementation_must_name_a_catalog_entry_and_every_entry_needs_one():
    catalog = Registry("allocation", {"erk": "entry", "lamp": "entry"})
    with pytest.raises(UnknownNameError, match="unknown allocation 'magic'; expected one of: erk"):
        Implementations(catalog, {"erk": len, "magic": len})
    assert Implementations(catalog, {"erk": len}).unimplemented() == ("lamp",)


@pytest.fixture
def restore_repairs():
    """Undo what a test registers, so later tests see the built-in repairs only."""
    saved = [(registry, dict(registry)) for registry in (REPAIRS, REPAIR_METHODS)]
    yield
    for registry, entries in saved:
        registry.clear()
        registry.update(entries)


def _noop(model, batches, stats, params) -> None:
    """Test-only: a repair that does nothing."""


@pytest.mark.usefixtures("restore_repairs")
def test_a_plugin_adds_a_catalog_entry_with_its_implementation():
    register_repair(RepairMethod("plugin_noop", NoParams, _noop, needs_dense=False))
    assert REPAIRS["plugin_noop"] == RepairInfo("plugin_noop", NoParams, True, ACTIVATION)
    assert REPAIR_METHODS["plugin_noop"].uses_calibration
    trial = TrialConfig(
        "fashion_mnist", "resnet20", "erk", 0.9, "plugin_noop", {}, 3, 64, None, None
    )
    assert (trial.seed, trial.calib_size) == (3, 64)

    REPAIRS.register("plugin_fixed", RepairInfo("plugin_fixed", NoParams, False, NO_REPAIR))
    register_repair(RepairMethod("plugin_fixed", NoParams, _noop, needs_dense=False))
    assert not REPAIR_METHODS["plugin_fixed"].uses_calibration
    assert is_deterministic("plugin_fixed") and repair_role("plugin_fixed") == NO_REPAIR

    with pytest.raises(UserError, match="repair method 'bn_recal' is already registered"):
        register_repair(RepairMethod("bn_recal", NoParams, _noop, needs_dense=False))
    with pytest.raises(UserError, match="'layer_var' takes NoParams, but its catalog entry"):
        register_repair(RepairMethod("layer_var", NoParams, _noop, needs_dense=False))


def test_the_analysis_takes_roles_and_order_from_the_catalog():
    assert repair_role("obs_reconstruct[damping=0.1]") == RECONSTRUCTION
    assert repair_role("unregistered_plugin") == ACTIVATION
    assert is_deterministic("none") and not is_deterministic("bn_recal")
    assert variant_order({"zeta", "adaprune", "none", "channel_var[points=logits]"}) == [
        "none", "channel_var[points=logits]", "adaprune", "zeta",
    ]  # fmt: skip


NO_TORCH = """
import importlib, pkgutil, sys
import analysis
from sweep.plan import grid, identity
for module in pkgutil.walk_packages(analysis.__path__, "analysis."):
    importlib.import_module(module.name)
baselines = grid.load_grid("baselines")
trials = grid.expand(baselines, {key: "a" * 64 for key in grid.checkpoints_needed(baselines)})
assert len({trial.key for trial in trials}) == len(trials)
assert {trial.repair_variant for trial in trials} >= {"none", "adaprune"}
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "torch")
assert not loaded, loaded
"""


def test_planning_a_grid_and_the_analysis_never_import_torch():
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
