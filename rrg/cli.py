"""What every command-line script shares: typed configs from flags, and one-line errors for bad input."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

from .io import InputError

T = TypeVar("T")


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
