"""Every label-free repair method, in display order: its parameters, whether it draws a
calibration set, and its role in the analysis.

Torch-free, so the trial identity can fill in parameter defaults and drop the seed of a method that
draws nothing, grids can be checked, and the analysis can group methods by role, all without
torch. `sweep.tasks.repair` implements each entry (REPAIR_METHODS); a plugin adds an entry and its
implementation at run time with `sweep.tasks.repair.register_repair`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from sweep.catalog.registry import Registry, named_registry
from sweep.catalog.repair_parameters import (
    AdaPruneParams,
    MatchParams,
    NoParams,
    ObsParams,
    ShrinkParams,
)
from sweep.core.errors import UserError

# A method's part in the regime definition (analysis/definitions.py): the dense BatchNorm
# statistics kept, BatchNorm recalibrated, activation statistics matched, weights refitted.
NO_REPAIR, BN_RECAL, ACTIVATION, RECONSTRUCTION = "none", "bn_recal", "activation", "reconstruction"
ROLES = (NO_REPAIR, BN_RECAL, ACTIVATION, RECONSTRUCTION)


@dataclass(frozen=True)
class RepairInfo:
    """One repair method. uses_calibration: it draws a calibration set, so a trial's seed and
    calib_size matter (without one they are 0 in its identity); role: one of ROLES."""

    name: str
    params: type  # frozen dataclass of its parameters, every one with its default
    uses_calibration: bool = True
    role: str = ACTIVATION


REPAIRS: Registry[RepairInfo] = named_registry(
    "repair method",
    (
        RepairInfo("none", NoParams, uses_calibration=False, role=NO_REPAIR),
        RepairInfo("bn_recal", NoParams, role=BN_RECAL),
        RepairInfo("layer_var", MatchParams),
        RepairInfo("channel_var", MatchParams),
        RepairInfo("channel_var_shrink", ShrinkParams),
        RepairInfo("obs_reconstruct", ObsParams, role=RECONSTRUCTION),
        RepairInfo("adaprune", AdaPruneParams, role=RECONSTRUCTION),
    ),
)


def repair_params(method: str, **params: object) -> object:
    """Validated, typed parameters of `method` (defaults filled in): checks a grid before launch."""
    cls = REPAIRS[method].params
    hints = typing.get_type_hints(cls)
    fields = [field.name for field in dataclasses.fields(cls)]
    for name in params:
        if name not in fields:
            allowed = ", ".join(fields) if fields else "none"
            raise UserError(
                f"unknown parameter {name!r} for repair method {method!r}; expected: {allowed}"
            )
    return cls(**{name: _typed(method, name, v, hints[name]) for name, v in params.items()})


def _typed(method: str, name: str, value: object, expected: type) -> object:
    """`value` as `expected`: an int stands for a float, a bool never for a number."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, expected) and not (expected is not bool and isinstance(value, bool)):
        return value
    raise UserError(
        f"repair method {method!r} parameter {name}={value!r} must be {expected.__name__}, "
        f"got {type(value).__name__}"
    )
