"""The canonical identity of a trial: one configuration, one key, however a grid spelled it.

A `TrialConfig` canonicalises itself on construction, so every path that builds one (grid
expansion, a Tune worker rebuilding it from its dict, the store upgrade) gets the same key:

- a repair's parameters get every default filled in (`channel_var_shrink` and
  `{method: channel_var_shrink, params: {recal_after: false}}` are one trial), from the
  torch-free catalog (`sweep.catalog.repairs`), so planning and the analysis never import torch;
- a repair that draws no calibration set (`none`) has seed 0 and calib_size 0;
- an eval_limit at least as large as the dataset's test split means "the whole split" (None);
- the sparsity is rounded to SPARSITY_DECIMALS.

The eval precision is part of the identity (key schema 3): bf16 and fp32 evaluations of one grid
point differ by up to a point of top-1 at high sparsity, so a GPU run resumed on a CPU store runs
its own trials instead of taking the CPU rows as done.

The key is the sha256 of the canonical fields plus KEY_SCHEMA, the version of this recipe: bump
it whenever the recipe changes, and teach `sweep.upgrade` to map the previous version's rows.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sweep.catalog.datasets import DATASETS
from sweep.catalog.repairs import REPAIRS, repair_params
from sweep.plan.variants import variant_name

KEY_SCHEMA = 3
SPARSITY_DECIMALS = 6
# Arithmetic of the eval forward passes: fp32, or bf16 autocast (the default where trials get GPUs).
EVAL_PRECISIONS = ("fp32", "bf16")


def full_repair_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of `method`, defaults filled in, validated and typed (UserError if bad)."""
    return dict(_full_repair_params(method, json.dumps(params, sort_keys=True)))


@functools.lru_cache(maxsize=256)
def _full_repair_params(method: str, params: str) -> dict[str, Any]:
    """Memoised on the JSON of the parameters (callers get a copy): a 100k-point plan builds
    every config's parameters, and a grid has only a handful of distinct ones."""
    return dataclasses.asdict(repair_params(method, **json.loads(params)))


def non_default_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `method` that differ from its defaults."""
    defaults = full_repair_params(method, {})
    return {k: v for k, v in full_repair_params(method, params).items() if defaults.get(k) != v}


def uses_calibration(method: str) -> bool:
    """Whether the method draws a calibration set, i.e. whether seed and calib_size apply."""
    return REPAIRS[method].uses_calibration


def canonical_eval_limit(dataset: str, split: str, eval_limit: int | None) -> int | None:
    """None when the limit covers the whole split: both spell the same evaluation."""
    if eval_limit is None or dataset not in DATASETS:
        return eval_limit
    info = DATASETS[dataset]
    size = info.val_size if split == "val" else info.test_size
    return None if eval_limit >= size else eval_limit


@dataclass(frozen=True)
class RepairSpec:
    """A repair method with its full parameters (defaults filled in, keys sorted)."""

    method: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def create(cls, method: str, params: dict[str, Any] | None = None) -> RepairSpec:
        return cls(method, tuple(sorted(full_repair_params(method, params or {}).items())))

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def variant(self) -> str:
        return variant_name(self.method, non_default_params(self.method, self.params_dict))

    @property
    def uses_calibration(self) -> bool:
        return uses_calibration(self.method)


@dataclass(frozen=True)
class TrialConfig:
    """One grid point: everything that determines its result, nothing that does not."""

    dataset: str
    arch: str
    allocation: str
    sparsity: float
    repair: str
    repair_params: dict[str, Any]
    seed: int
    calib_size: int
    eval_limit: int | None
    checkpoint_sha256: str | None
    replicate: int = 0
    eval_split: str = "test"
    eval_precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.eval_precision not in EVAL_PRECISIONS:
            raise ValueError(
                f"eval precision {self.eval_precision!r}; expected one of {EVAL_PRECISIONS}"
            )
        calibrates = uses_calibration(self.repair)
        canonical = {
            "sparsity": round(float(self.sparsity), SPARSITY_DECIMALS),
            "repair_params": full_repair_params(self.repair, dict(self.repair_params)),
            "seed": self.seed if calibrates else 0,
            "calib_size": self.calib_size if calibrates else 0,
            "eval_limit": canonical_eval_limit(self.dataset, self.eval_split, self.eval_limit),
        }
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    @functools.cached_property
    def key(self) -> str:
        """Content-addressed trial key; requires the checkpoint digest. Computed once: a
        100k-point plan looks every key up several times."""
        if self.checkpoint_sha256 is None:
            raise ValueError("a trial key needs the checkpoint digest")
        payload = {"key_schema": KEY_SCHEMA, **self.to_dict()}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def repair_variant(self) -> str:
        return variant_name(self.repair, non_default_params(self.repair, self.repair_params))

    def describe(self) -> str:
        """A short human-readable label for progress and error lines."""
        return (
            f"{self.dataset}/{self.arch} {self.allocation} s={self.sparsity:g} "
            f"{self.repair_variant} replicate={self.replicate} seed={self.seed} "
            f"{self.eval_precision}"
        )

    def to_dict(self) -> dict[str, Any]:
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {**values, "repair_params": dict(self.repair_params)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        return cls(**values)
