r"""Metric bars from score cards: one row per report section, with bootstrap 95% intervals as error bars,
and (when a card holds an image control) a row of real-minus-control differences. CIDEr (0-10) has its
own axes beside the 0-1 metrics; a section no prediction (or no reference) has is said so, not drawn as
zeros.

    python plot/metrics.py results/reference/lora/scores.json results/reference/zero_shot/scores.json \
        --labels "LoRA" "zero-shot" --out results/figures/metrics.png

The control row answers "does the model use the image?": a report scored against blank or shuffled
images should lose points; a difference near zero means the text is written from the prompt alone.

Cards with a "clinical" block (CheXpert-14 label F1, rrg.score.clinical.f1) also get a second figure,
--clinical_out (default: <out>_clinical.png): F1 per observation with bootstrap 95% intervals, the
micro/macro F1 over 14 and 5 observations, and the image-control difference of those F1s.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.metrics_figure import main

if __name__ == "__main__":
    main()
