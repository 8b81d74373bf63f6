"""Paired significance between runs on the same studies:

    python eval/compare.py --runs runs/a/predictions.jsonl runs/b [name=runs/c/predictions.jsonl ...] \\
        --out results/compare/a_vs_b

The first run is the baseline; every other run is compared with it (RadEval's compare_systems semantics).
For every metric of the score card (BLEU-1..4, METEOR, ROUGE-L, CIDEr per section, ReXrank's BLEU-2, the
clinical F1 summary) writes the difference with its paired-bootstrap 95% interval and an
approximate-randomization p-value: <out>/compare.json, <out>/compare.md, <out>/compare.png. Runs on
different study sets (or with other references) are refused, the ids named.
"""

from __future__ import annotations

import sys

from rrg.score.compare import main

if __name__ == "__main__":
    sys.exit(0 if main() else 1)
