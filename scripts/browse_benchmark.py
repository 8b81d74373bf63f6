"""How fast the case browser is on a test set of the reference protocol's size (1,251 studies).

A thin entry point: the code, and the usage this docstring held, are in rrg/bench/browse.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.bench.browse import main

if __name__ == "__main__":
    main()
