"""Training curves from one or more runs' train_log.jsonl: loss, validation loss, learning rate, throughput.

A thin entry point: the code, and the usage this docstring held, are in rrg/report/training_curves.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.training_curves import main

if __name__ == "__main__":
    main()
