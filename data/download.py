"""Download IU X-Ray (Kaggle raddar/chest-xrays-indiana-university) into data/iu_xray/ and verify it.

A thin entry point: the code, and the usage this docstring held, are in rrg/data/download_command.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.data.download_command import main

if __name__ == "__main__":
    sys.exit(main())
