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
import logging
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from rrg.io import InputError

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
# Where runs write by default: ignored by git; results/ holds what is committed.
RUNS_DIR = "runs"

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
    refuses an empty string. positional=True makes it a positional argument (see add_positional).
    Extra keyword arguments (choices, nargs, metavar, ...) go to argparse.
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
    if isinstance(value, list | tuple):  # every value of a list flag is in the range
        return next((p for v in value if (p := range_problem(name, v, meta))), None)
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

    def _format_action_invocation(self, action):
        if isinstance(action, Switch):  # its --dashed aliases work but are not listed
            return ", ".join(n for n in action.option_strings if "-" not in n[2:])
        return super()._format_action_invocation(action)


class Switch(argparse.Action):
    """A boolean flag read as `--name` (on) / `--no_name` (off)."""

    def __init__(self, option_strings, dest, **kwargs):
        name = option_strings[0].removeprefix("--")
        # A flag already named no_X only turns on (a --no_no_X would read as a typo).
        on, off = [f"--{name}"], [] if name.startswith("no_") else [f"--no_{name}"]
        # --with-dashes too, as argparse and HfArgumentParser accept for the other flags.
        on += [n.replace("_", "-") for n in on if "_" in n]
        off += [n.replace("_", "-") for n in off]
        self.off = set(off)
        super().__init__(on + off, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string not in self.off)

    def format_usage(self) -> str:
        return " | ".join(n for n in self.option_strings if "-" not in n[2:])


def _parser_class():
    # transformers is imported only when flags are parsed, so `import rrg.cli` stays light.
    from transformers import HfArgumentParser

    class SettingsParser(HfArgumentParser):
        """HfArgumentParser (a flag per field, help from its metadata), booleans as Switch, ranges left out."""

        @staticmethod
        def _parse_dataclass_field(parser, field):
            meta = {k: v for k, v in field.metadata.items() if k not in RANGE_KEYS}
            if meta.pop("positional", False):
                add_positional(parser, field, meta)
                return
            if field.type in (bool, "bool"):
                parser.add_argument(f"--{field.name}", action=Switch, default=field.default, **meta)
                return
            field = copy.copy(field)
            field.metadata = types.MappingProxyType(meta)
            HfArgumentParser._parse_dataclass_field(parser, field)

        def parse_args_into_dataclasses(self, args=None, **kwargs):
            # An unknown flag is argparse's one-line usage error (exit 2), not a ValueError traceback.
            *settings, rest = super().parse_args_into_dataclasses(args=args, return_remaining_strings=True)
            if rest:
                self.error(f"unrecognized arguments: {' '.join(rest)}")
            return tuple(settings)

    return SettingsParser


def add_positional(parser: argparse.ArgumentParser, field: dataclasses.Field, meta: dict) -> None:
    """A positional argument for a field declared flag(..., positional=True): list[X] takes one or more
    values (none when it has a default), X | None one or none, X exactly one."""
    kind, nargs = field.type, None
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is list:
        kind, nargs = args[0], "*" if field.default_factory is not dataclasses.MISSING else "+"
    elif args:  # X | None
        kind, nargs = args[0], "?"
    if field.default is not dataclasses.MISSING:
        meta["default"] = field.default
        nargs = nargs or "?"
    elif field.default_factory is not dataclasses.MISSING:
        meta["default"] = field.default_factory()
    parser.add_argument(field.name, type=kind, nargs=nargs, **meta)


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


def shared_data_dir() -> Path:
    """The shared data folder (tokenizer, Kaggle CSVs, fixtures): $RRG_SHARED_DATA, else ../shared/data
    beside the repository."""
    return Path(os.environ.get("RRG_SHARED_DATA") or REPO.parent / "shared" / "data")


# Third-party warnings every run prints that say nothing about this run, matched exactly (their logger
# or warning category and the start of their message), so that any other warning still shows.
KNOWN_NOISE_LOGS = {
    # torchao registers Enum classes with torch's pytree, which torch now supports natively.
    "torch.utils._pytree": "%s is an Enum subclass and is now natively supported by torch.compile",
    # bitsandbytes looks for an optional CPU kernel package on import.
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
}
KNOWN_NOISE_WARNINGS = (
    # peft reads transformers' renamed gradient-checkpointing flag.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


class _DropMessages(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def quiet_known_warnings() -> None:
    """Drop the third-party log lines and warnings in KNOWN_NOISE_* (each entry point calls this before
    the imports that emit them)."""
    import warnings

    for name, start in KNOWN_NOISE_LOGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.start == start for f in logger.filters):
            logger.addFilter(_DropMessages(start))
    for category, message in KNOWN_NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
