"""What every command-line script shares: typed settings from flags, range checks, one-line errors.

A script declares its settings as a dataclass whose fields are `flag(default, help, ...)`, and reads
them with `parse_flags(Settings)`: one flag per field (`--name VALUE`; booleans `--name` / `--no_name`),
`--help` shows each flag's help and default, and every numeric flag is checked against its range as
it is parsed, so a bad value is one line naming the flag instead of a traceback deep in torch.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import types
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar

from .io import InputError

T = TypeVar("T")

# Keys of a field's metadata that hold its range; HfArgumentParser must not see them.
RANGE_KEYS = ("ge", "gt", "le", "lt", "finite", "nonempty")


def flag(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool | None = None,
    nonempty: bool = False,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    **metadata: Any,
):
    """A settings field: its default, the one-line help `--help` prints (with the default), and its range.

    ge/gt/le/lt bound a number (a float is also required to be finite unless finite=False); nonempty
    refuses an empty string. Extra keyword arguments (choices, nargs, ...) go to argparse.
    """
    meta = {"help": help, **metadata}
    for key, value in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("finite", finite)):
        if value is not None:
            meta[key] = value
    if nonempty:
        meta["nonempty"] = True
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def range_problem(name: str, value: Any, meta: dict) -> str | None:
    """Why `value` is outside the range a field's metadata declares (None when it is inside)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return f"--{name} must not be empty" if meta.get("nonempty") and not value.strip() else None
    if not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and meta.get("finite", True) and not math.isfinite(value):
        return f"--{name} must be a finite number (got {value})"
    for key, test, words in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        bound = meta.get(key)
        if bound is not None and not (isinstance(value, float) and math.isnan(value)) and not test(value, bound):
            return f"--{name} must be {words} {bound} (got {value})"
    return None


def check_ranges(settings: Any) -> None:
    """Raise InputError naming the first field of a settings dataclass whose value is out of its range."""
    for f in dataclasses.fields(settings):
        problem = range_problem(f.name, getattr(settings, f.name), dict(f.metadata))
        if problem:
            raise InputError(problem)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every flag's default after its help."""

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        return text.replace("%(default)s", "''") if action.default == "" else text


class Switch(argparse.Action):
    """A boolean flag read as `--name` (on) / `--no_name` (off)."""

    def __init__(self, option_strings, dest, **kwargs):
        name = option_strings[0].removeprefix("--")
        super().__init__([f"--{name}", f"--no_{name}"], dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not option_string.startswith("--no_"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _parser_class():
    # transformers is imported only when flags are parsed, so `import rrg.cli` stays light.
    from transformers import HfArgumentParser

    class SettingsParser(HfArgumentParser):
        """HfArgumentParser (a flag per field, help from its metadata), booleans as Switch, ranges left out."""

        @staticmethod
        def _parse_dataclass_field(parser, field):
            meta = {k: v for k, v in field.metadata.items() if k not in RANGE_KEYS}
            if field.type in (bool, "bool"):
                parser.add_argument(f"--{field.name}", action=Switch, default=field.default, **meta)
                return
            field = copy.copy(field)
            field.metadata = types.MappingProxyType(meta)
            HfArgumentParser._parse_dataclass_field(parser, field)

    return SettingsParser


def build_parser(*settings_classes: type, description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the given settings dataclasses."""
    cls = _parser_class()
    return cls(list(settings_classes), description=description, formatter_class=HelpFormatter)


def parse_flags(
    settings_class: type[T], argv: Sequence[str] | None = None, *, description: str | None = None
) -> T:
    """Settings from the command line (sys.argv[1:] by default), every range checked.

    A value out of range prints `error: --name must be ... (got ...)` and exits 2, as argparse does for
    a malformed flag.
    """
    parser = build_parser(settings_class, description=description)
    (settings,) = parser.parse_args_into_dataclasses(args=None if argv is None else list(argv))
    try:
        check_ranges(settings)
    except InputError as e:
        parser.exit(2, f"error: {e}\n")
    return settings


def exits_on_input_error(main: Callable[..., T]) -> Callable[..., T]:
    """Print an InputError as one line (`error: file:line: ...`) and exit 1, instead of a traceback."""

    @wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)

    return wrapper
