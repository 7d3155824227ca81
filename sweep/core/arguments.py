"""The argument parser of every ``python -m`` entry: one-line usage errors, flags derived from
option dataclasses, and old flag spellings that still work.

argparse's own error handling prints the usage block and exits; raising a UserError instead lets
`sweep.core.errors.cli_main` report it like any other bad input: one line on stderr, exit code 2.
Flags derived from a dataclass (`add_option_flags`) keep each default and help text in one place:
the dataclass field. One word has one meaning across the commands (docs/architecture.md): a result
store is ``--store``, a checkpoints folder ``--checkpoints``, an output file ``-o/--output``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from sweep.core.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser whose errors raise UserError (``--help`` still exits 0)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


def add_renamed_flag(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Keep an old spelling working for now: it sets `new`'s value and prints a one-line notice.

    The old spelling is hidden from --help, so the documented name is the only one users learn.
    """
    target = next(action for action in parser._actions if new in action.option_strings)
    parser.add_argument(
        old,
        dest=target.dest,
        type=target.type,
        action=_Renamed,
        new=new,
        help=argparse.SUPPRESS,
    )


class _Renamed(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(
            f"note: {option_string} is now {self.new}; the old name will go away", file=sys.stderr
        )
        setattr(namespace, self.dest, values)


def option(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also a CLI flag: its default and help are written only here."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kwargs})


def add_option_flags(
    parser: argparse.ArgumentParser, options: type, only: Sequence[str] | None = None
) -> None:
    """One ``--flag-name`` per field of the dataclass `options` (made with `option`), or per
    field named in `only`. Booleans become switches; ``X | None`` fields take X; the help shows
    the default."""
    hints = typing.get_type_hints(options)
    for spec in dataclasses.fields(options):
        if only is not None and spec.name not in only:
            continue
        flag = "--" + spec.name.replace("_", "-")
        extra = {k: v for k, v in spec.metadata.items() if k != "help"}
        help_text = spec.metadata["help"]
        if spec.default is not None and spec.default is not False:
            help_text += f" (default: {spec.default})"
        if hints[spec.name] is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        kind = _value_type(hints[spec.name])
        extra.setdefault("type", kind)
        if "choices" not in extra:
            extra.setdefault("metavar", _METAVARS.get(kind, spec.name.upper()))
        parser.add_argument(flag, default=spec.default, help=help_text, **extra)


_METAVARS = {Path: "DIR", int: "N", float: "N"}


def _value_type(hint: Any) -> Any:
    """`int` for ``int | None``, `Path` for ``Path``: what argparse converts the text to."""
    if isinstance(hint, types.UnionType):
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint
