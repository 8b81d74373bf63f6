"""A static case browser: one HTML page, study by study, of one run or several side by side.

A thin entry point: the code, and the usage this docstring held, are in rrg/report/browse.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.report.browse import main

if __name__ == "__main__":
    sys.exit(main())
