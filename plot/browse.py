"""A static case browser: one HTML page, study by study, of one run or several side by side.

    python plot/browse.py results/lora-test_report --out runs/browse/index.html
    python plot/browse.py results/lora --compare results/zero_shot --image_dir data/images \
        --entries data/test_report.json --out runs/browse/index.html      # compare two runs

Each run's card is its scores.json (the eval run's) or predictions.scores.json (eval/score.py's default).

Per study: the views, the indication, the reference, each run's prediction with the words it shares with
the reference highlighted, its BLEU-4 and ROUGE-L (pycocoevalcap, R2Gen-normalised, as eval/score.py
scores the report), the image-control prediction when eval made one, and clinical labels per observation
when given. The page filters (text, score range, observation) and sorts (score, gap between runs,
clinical disagreements), and j/k or the arrow keys move from study to study.

The page is one file with no server and no network: the data sits in a <script type="application/json">
tag, the script and style inline; images are links relative to the page (or embedded thumbnails with
--thumbnails), so the page opens from disk or any static host as long as the images keep their place.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.report.browse import main

if __name__ == "__main__":
    sys.exit(main())
