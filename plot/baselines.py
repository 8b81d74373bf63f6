"""The text-only baselines per protocol: BLEU-4 beside clinical F1-14 and F1-5 (figure), every headline metric (table).

    python plot/baselines.py --root results/baselines --summary results/baselines/summary.md

Reads ROOT/<protocol>/<method>.scores.json (and, where present, .r2gen_compat and .legacy cards) as
scripts/baselines.sh writes them. A template report that scores well on BLEU and poorly on clinical F1 is
the point to see: n-gram overlap rewards the dataset's repetitive normal reports. Clinical F1 comes from the
card's clinical block when the card has one (see CLINICAL_F1) and shows as "n/a" otherwise.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.baselines_figure import main

if __name__ == "__main__":
    main()
