"""Build the IU X-Ray split files from the Kaggle data (see rrg/data/iu_xray.py for the protocols).

A thin entry point: the code, and the usage this docstring held, are in rrg/data/report2json.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.data.report2json import main

if __name__ == "__main__":
    sys.exit(main())
