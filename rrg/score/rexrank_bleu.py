"""ReXrank's BLEU: the BLEU-2 its evaluation code (rajpurkarlab/CXR-Report-Metric, `add_bleu_col`) computes.

Per study, fast_bleu's `BLEU([reference], {"bigram": (1/2, 1/2)})` of the prediction, with CXR-Report-Metric's
tokenisation: lower-cased, "." split off as its own token (`.replace(".", " .")`), split on single spaces,
empty strings dropped (so a line break stays inside its token). fast_bleu's defaults are NLTK's sentence BLEU
with smoothing method 1 (a zero n-gram count becomes 0.1 / its denominator; no unigram match is 0) and NLTK's
brevity penalty, so NLTK computes it here. The leaderboard figure is the mean over studies. It is not our
corpus-level BLEU-2 (pycocoevalcap, R2Gen-normalised text): a row is placed on ReXrank's scale with this one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WEIGHTS = (0.5, 0.5)
NAME = "ReXrank BLEU-2"


def tokens(text: str) -> list[str]:
    """CXR-Report-Metric's prep_reports for one text."""
    return [t for t in str(text).lower().replace(".", " .").split(" ") if t != ""]


def per_study(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """BLEU-2 of each prediction against its one reference, as CXR-Report-Metric scores it."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smoothing = SmoothingFunction().method1
    return np.asarray(
        [
            sentence_bleu([tokens(ref)], tokens(pred), weights=WEIGHTS, smoothing_function=smoothing)
            for pred, ref in zip(predictions, references)
        ],
        dtype=float,
    )


def block(predictions: Sequence[str], references: Sequence[str], weights: np.ndarray | None = None) -> dict:
    """The card's "rexrank_bleu" block: the mean over studies, and a 95% interval on the card's resamples."""
    scores = per_study(predictions, references)
    out: dict = {
        "bleu2": float(scores.mean()) if len(scores) else None,
        "studies": len(scores),
        "text": "raw prediction vs the first reference, whole texts (as submitted to ReXrank)",
    }
    if weights is not None and len(scores):
        values = weights @ scores / weights.sum(axis=1)
        lo, hi = np.percentile(values, [2.5, 97.5])
        out["ci95"] = [float(lo), float(hi)]
    return out
