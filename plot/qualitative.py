"""A paper-style qualitative figure: for a few studies, the X-ray, the reference and the generated report,
the words they share coloured (PNG and PDF).

    python plot/qualitative.py results/lora-test_report --out results/figures/qualitative.png     # best, median, worst
    python plot/qualitative.py results/lora-test_report --ids 1900 7 --out results/figures/qualitative.png

Studies are picked by a per-study metric (--metric, pycocoevalcap on the R2Gen-normalised report, as in
eval/score.py): --k studies at evenly spaced ranks from the best to the worst (3: best, median, worst),
or the studies given with --ids. Coloured words are the reference's and the prediction's longest common
subsequence of words (rrg.report.cases.overlap, what ROUGE-L counts), the same words the case browser highlights.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.report.qualitative import main

if __name__ == "__main__":
    sys.exit(main())
