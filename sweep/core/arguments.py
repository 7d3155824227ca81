"""The argument parser of every ``python -m`` entry: usage mistakes are UserErrors too.

argparse's own error handling prints the usage block and exits; raising a UserError instead lets
`sweep.core.errors.cli_main` report it like any other bad input: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from sweep.core.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors raise UserError (``--help`` still exits 0)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)
