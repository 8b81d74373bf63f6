"""Write a ReXrank submission file from our predictions:

A thin entry point: the code, and the usage this docstring held, are in rrg/data/rexrank_submission.py (`--help` prints it)."""

from __future__ import annotations

import sys

from rrg.data.rexrank_submission import main

if __name__ == "__main__":
    sys.exit(main())
