"""Repair variant names: the method plus the parameters that differ from its defaults.

A variant is the unit every table, legend and filter of the analysis groups by, so two parameter
settings of one method are never pooled. Torch-free on purpose: the analysis imports it.

    variant_name("channel_var_shrink", {})                          -> "channel_var_shrink"
    variant_name("channel_var_shrink", {"tau": 0.5, "points": "logits"})
                                                    -> "channel_var_shrink[points=logits,tau=0.5]"
"""

from __future__ import annotations

from collections.abc import Mapping


def format_value(value: object) -> str:
    """Values as a grid file would spell them: true/false, shortest float repr, bare strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def variant_name(method: str, non_default_params: Mapping[str, object]) -> str:
    """`method` alone, or `method[key=value,…]` with the keys sorted."""
    if not non_default_params:
        return method
    inner = ",".join(f"{k}={format_value(v)}" for k, v in sorted(non_default_params.items()))
    return f"{method}[{inner}]"


def variant_method(variant: str) -> str:
    """The method of a variant name: the part before '['."""
    return variant.split("[", 1)[0]
