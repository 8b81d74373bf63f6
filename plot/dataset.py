"""One figure describing the IU X-Ray split files: studies per split, views, report lengths, frequent reports.

A thin entry point: the code, and the usage this docstring held, are in rrg/report/dataset_figure.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.report.dataset_figure import main

if __name__ == "__main__":
    sys.exit(main())
