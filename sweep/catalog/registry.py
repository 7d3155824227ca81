"""One way to look a name up, for every family of names: datasets, archs, allocations, repairs.

A `Registry` is a dict from name to entry, in display order. Subscripting it is the lookup: a name
it lacks raises UnknownNameError naming the family and every known name, so a CLI, the grid
validator and a worker all report an unknown name in one shape. `Implementations` is the torch
side of a catalog registry: it accepts only the catalog's names, and says which of them it lacks.
Torch-free, like every catalog module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, TypeVar

from sweep.core.errors import UnknownNameError, UserError

T = TypeVar("T")


class Named(Protocol):
    """A catalog entry: it carries its own name."""

    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


class Registry(dict[str, T]):
    """Entries by name, in display order (the order they were registered)."""

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        super().__init__()
        self.kind = kind  # what a name names, as error messages spell it: "arch", "repair method"
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def __getitem__(self, name: object) -> T:
        try:
            return super().__getitem__(name)  # type: ignore[index]
        except (KeyError, TypeError):  # TypeError: an unhashable value read from a grid file
            raise UnknownNameError(self.kind, name, self) from None

    def register(self, name: str, entry: T) -> T:
        """Add an entry (plugins add theirs at run time); a name already taken is a UserError."""
        if name in self:
            raise UserError(f"{self.kind} {name!r} is already registered")
        super().__setitem__(name, entry)
        return entry


def named_registry(kind: str, entries: Iterable[N]) -> Registry[N]:
    """A registry of catalog entries, each under its own name, in the order given (a name given
    twice is a UserError, not a silent overwrite)."""
    registry: Registry[N] = Registry(kind)
    for entry in entries:
        registry.register(entry.name, entry)
    return registry


class Implementations(Registry[T]):
    """The torch implementations of a catalog registry's entries, by the catalog's names.

    Registering a name the catalog lacks raises UnknownNameError, so no implementation exists
    that grids, trial keys and the analysis cannot name; `unimplemented` lists the catalog names
    still without one (tests/test_catalog.py requires none once the torch side is imported)."""

    def __init__(self, catalog: Registry[Any], implementations: Mapping[str, T]) -> None:
        self.catalog = catalog
        super().__init__(catalog.kind, implementations)

    def register(self, name: str, entry: T) -> T:
        self.catalog[name]  # the lookup is the check: UnknownNameError
        return super().register(name, entry)

    def unimplemented(self) -> tuple[str, ...]:
        return tuple(name for name in self.catalog if name not in self)
