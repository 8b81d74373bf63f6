"""Region breakdown of score cards made with `eval/score.py --regions`: one panel per metric

A thin entry point: the code, and the usage this docstring held, are in rrg/report/regions_figure.py (`--help` prints it)."""

from __future__ import annotations

import sys

from rrg.report.regions_figure import main

if __name__ == "__main__":
    sys.exit(main())
