"""User-facing errors: anything a user can fix by changing an argument, a file or a grid.

CLIs print such an error as one line and exit with code 2; every other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

USAGE_EXIT_CODE = 2


class UserError(Exception):
    """Bad input: the message names the bad value and what is allowed."""


class UnknownNameError(UserError):
    """A name that is not in a registry (dataset, arch, allocation, repair, grid)."""

    def __init__(self, kind: str, value: object, allowed: Iterable[str]) -> None:
        self.kind, self.value, self.allowed = kind, value, tuple(allowed)
        super().__init__(f"unknown {kind} {value!r}; expected one of: {', '.join(self.allowed)}")


class DataMissingError(UserError):
    """A dataset's files are not where they should be (and downloading is not possible)."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or made for another arch/dataset."""


def cli_main(main: Callable[[], int | None]) -> int:
    """Run a CLI body; turn a UserError into one line on stderr and exit code 2."""
    try:
        return main() or 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_EXIT_CODE
