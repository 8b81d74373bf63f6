"""The comparison table: our runs beside the reference paper and published IU X-Ray results.

A thin entry point: the code, and the usage this docstring held, are in rrg/report/tables.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.tables import main

if __name__ == "__main__":
    main()
