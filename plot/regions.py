"""Region breakdown of score cards made with `eval/score.py --regions`: one panel per metric
(BLEU-4, ROUGE-L, CIDEr, clinical micro F1 over 14 observations), one group of bars per region, one bar
per card, bootstrap 95% intervals as error bars when the cards have them.

    python plot/regions.py --scores plain/scores.json regions/scores.json --labels plain structured \\
        --out results/figures/regions.png

Also prints the rows as a Markdown table (region, studies, metric [interval] per card).
"""

from __future__ import annotations

import sys

from rrg.report.regions_figure import main

if __name__ == "__main__":
    sys.exit(main())
