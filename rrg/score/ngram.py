"""BLEU, ROUGE-L and CIDEr pieces: report normalisation, per-sample n-gram statistics."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.cider.cider_scorer import precook
from scipy import sparse

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SECTIONS = ("report", "findings", "impression")
# corpus_scores' keys and the names pycocoevalcap (and published tables such as test_summary.json) use.
COCO_NAMES = {
    "BLEU-1": "Bleu_1",
    "BLEU-2": "Bleu_2",
    "BLEU-3": "Bleu_3",
    "BLEU-4": "Bleu_4",
    "METEOR": "METEOR",
    "ROUGE-L": "ROUGE_L",
    "CIDEr": "CIDEr",
}


def normalize_report(text: str) -> str:
    """R2Gen's clean_report_iu_xray: lower case, list numbering dropped, punctuation removed inside
    sentences, sentences joined by " . " and ended by " .".

    The character class is R2Gen's own, range quirk included (`:-\\[` spans ':' to '[', so ; < = > ? @
    go too). Two deliberate differences: runs of whitespace become one space (line breaks would break
    METEOR's line protocol, and ROUGE-L splits on single spaces), and a text without words stays ""
    (R2Gen would make it " .").
    """
    report_cleaner = (
        text.replace("..", ".")
        .replace("..", ".")
        .replace("..", ".")
        .replace("1. ", "")
        .replace(". 2. ", ". ")
        .replace(". 3. ", ". ")
        .replace(". 4. ", ". ")
        .replace(". 5. ", ". ")
        .replace(" 2. ", ". ")
        .replace(" 3. ", ". ")
        .replace(" 4. ", ". ")
        .replace(" 5. ", ". ")
        .strip()
        .lower()
        .split(". ")
    )

    def sent_cleaner(sentence: str) -> str:
        cleaned = (
            sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
        )
        return re.sub(r"[.,?;*!%^&_+():-\[\]{}]", "", cleaned)

    report = " . ".join(sent_cleaner(s) for s in report_cleaner) + " ."
    tokens = report.split()
    return " ".join(tokens) if any(t != "." for t in tokens) else ""


_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's BleuScorer constants


def bleu_sample_stats(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sample: testlen, closest reflen, guess[1..4], correct[1..4] (pycocoevalcap's cooking)."""
    rows = []
    for hyp, ref in zip(hyps, refs):
        cooked = cook_test(hyp, cook_refs(ref))
        reflen = min((abs(length - cooked["testlen"]), length) for length in cooked["reflen"])[1]
        rows.append([cooked["testlen"], reflen, *cooked["guess"], *cooked["correct"]])
    return np.asarray(rows, dtype=float).reshape(-1, 10)


def bleu_from_stats(stats: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Corpus BLEU-1..4 (shape (B, 4)) for each resample: BleuScorer.compute_score on summed counts."""
    totals = weights @ stats
    testlen, reflen, guess, correct = totals[:, 0], totals[:, 1], totals[:, 2:6], totals[:, 6:10]
    precisions = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=1)
    bleus = precisions ** (1.0 / np.arange(1, 5))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleus * brevity[:, None]


@dataclass
class CiderStats:
    """pycocoevalcap's CIDEr-D-free CIDEr as sparse linear algebra, so document frequencies can be
    recomputed per resample. With idf c_g >= 0, min(tf_h c, tf_r c) * tf_r c = c^2 min(tf_h, tf_r) tf_r,
    so every dot product and norm is linear in u = c^2."""

    in_refs: sparse.csr_matrix  # (N, G): n-gram g occurs in a reference of sample i
    overlap: sparse.csr_matrix  # (P*4, G): min(tf_h, tf_r) * tf_r per (hyp, ref) pair and n
    ref_sq: sparse.csr_matrix  # (P*4, G): tf_r^2
    hyp_sq: sparse.csr_matrix  # (N*4, G): tf_h^2
    pair_sample: np.ndarray  # (P,): sample of each pair
    penalty: np.ndarray  # (P,): Gaussian length penalty (sigma 6, lengths counted as bigrams, as coded)
    n_refs: np.ndarray  # (N,)

    @classmethod
    def build(cls, hyps: Sequence[str], refs: Sequence[Sequence[str]], sigma: float = 6.0) -> CiderStats:
        vocab: dict[tuple, int] = {}
        doc, over, rsq, hsq = ([], [], []), ([], [], []), ([], [], []), ([], [], [])
        pair_sample, penalty = [], []

        def col(g: tuple) -> int:
            return vocab.setdefault(g, len(vocab))

        for i, (hyp, ref_list) in enumerate(zip(hyps, refs)):
            h = precook(hyp)
            h_len = sum(c for g, c in h.items() if len(g) == 2)
            for g, c in h.items():
                _append(hsq, i * 4 + len(g) - 1, col(g), c * c)
            present = set()
            for ref in ref_list:
                p = len(pair_sample)
                r = precook(ref)
                pair_sample.append(i)
                r_len = sum(c for g, c in r.items() if len(g) == 2)
                penalty.append(math.e ** (-((h_len - r_len) ** 2) / (2 * sigma**2)))
                for g, c in r.items():
                    j = col(g)
                    present.add(j)
                    _append(rsq, p * 4 + len(g) - 1, j, c * c)
                    if g in h:
                        _append(over, p * 4 + len(g) - 1, j, min(h[g], c) * c)
            for j in present:
                _append(doc, i, j, 1.0)
        n, n_pairs, g = len(hyps), len(pair_sample), len(vocab)
        return cls(
            in_refs=_csr(doc, (n, g)),
            overlap=_csr(over, (n_pairs * 4, g)),
            ref_sq=_csr(rsq, (n_pairs * 4, g)),
            hyp_sq=_csr(hsq, (n * 4, g)),
            pair_sample=np.asarray(pair_sample, dtype=int),
            penalty=np.asarray(penalty, dtype=float),
            n_refs=np.asarray([len(r) for r in refs], dtype=float),
        )

    def scores(self, weights: np.ndarray) -> np.ndarray:
        """Corpus CIDEr for each resample (rows of weights, shape (B, N))."""
        out = np.empty(len(weights))
        for b, w in enumerate(weights):
            n_docs = w.sum()
            if n_docs <= 0:
                out[b] = np.nan
                continue
            df = self.in_refs.T @ w
            u = (np.log(n_docs) - np.log(np.maximum(1.0, df))) ** 2
            num = (self.overlap @ u).reshape(-1, 4)
            norm_r = np.sqrt(self.ref_sq @ u).reshape(-1, 4)
            norm_h = np.sqrt(self.hyp_sq @ u).reshape(-1, 4)[self.pair_sample]
            denom = norm_h * norm_r
            with np.errstate(divide="ignore", invalid="ignore"):
                sim = np.where(denom != 0, num / denom, num)
            pair_score = sim.mean(axis=1) * self.penalty
            per_sample = np.bincount(self.pair_sample, weights=pair_score, minlength=len(w))
            per_sample = 10.0 * per_sample / self.n_refs
            out[b] = (w @ per_sample) / n_docs
        return out


def _append(triplets: tuple[list, list, list], row: int, col: int, value: float) -> None:
    triplets[0].append(row)
    triplets[1].append(col)
    triplets[2].append(value)


def _csr(triplets: tuple[list, list, list], shape: tuple[int, int]) -> sparse.csr_matrix:
    rows, cols, values = triplets
    return sparse.csr_matrix((np.asarray(values, dtype=float), (rows, cols)), shape=shape)
