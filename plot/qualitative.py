"""A paper-style qualitative figure: for a few studies, the X-ray, the reference and the generated report,

A thin entry point: the code, and the usage this docstring held, are in rrg/report/qualitative.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.report.qualitative import main

if __name__ == "__main__":
    sys.exit(main())
