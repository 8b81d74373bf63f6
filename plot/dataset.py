"""One figure describing the IU X-Ray split files: studies per split, views, report lengths, frequent reports.

    python plot/dataset.py --data_dir data/ --out runs/figures/dataset.png

Reads {train,val,test}_report.json (whichever exist) and reports.csv from --data_dir
(written by data/report2json.py).
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.report.dataset_figure import main

if __name__ == "__main__":
    sys.exit(main())
