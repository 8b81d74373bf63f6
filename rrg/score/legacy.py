"""The reference paper's own metric code, reproduced so its table can be compared with ours.

Faithful to the reference evaluation script, quirks included:
- sections come from the greedy regexes `Findings: (.+)` and `Impression: (.+)`; `.` stops only at a
  line break, so on a one-line report "findings" runs to the end and includes the impression text;
- tokens are `str.split()` (no lower-casing, punctuation stays glued to words);
- BLEU-n is nltk's sentence_bleu with smoothing method7 and the weights below (BLEU-3 uses 0.33, not 1/3);
- METEOR is nltk's meteor_score (needs the WordNet corpus);
- ROUGE is `rouge.Rouge().get_scores(reference_spans, prediction_spans, avg=True)`, i.e. the reference is
  passed as the *hypothesis* argument (f is what is kept);
- Precision/Recall/F1 are word-set overlaps of the lower-cased texts;
- every figure is a plain average over samples, one sample per line (per image, as the reference ran it).

Where the reference script would regenerate forever (a prediction without a parsable section) we count
the prediction as unparsed and score an empty string for that section. A reference without the
section would crash the reference script; here that sample is left out of that section's average and
counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rrg.io import InputError

FINDINGS_RE = re.compile(r"Findings: (.+)")
IMPRESSION_RE = re.compile(r"Impression: (.+)")
BLEU_WEIGHTS = {
    "B-1": (1, 0, 0, 0),
    "B-2": (0.5, 0.5, 0, 0),
    "B-3": (0.33, 0.33, 0.33, 0),
    "B-4": (0.25, 0.25, 0.25, 0.25),
}
LEGACY_KEYS = (
    "B-1",
    "B-2",
    "B-3",
    "B-4",
    "METEOR",
    "ROUGE-1",
    "ROUGE-2",
    "ROUGE-L",
    "Precision",
    "Recall",
    "F1",
)
WORDNET_HINT = "python scripts/install_wordnet.py"  # nltk's downloader, or Debian's packages offline


class WordNetMissingError(InputError):
    """nltk's WordNet corpus is not installed; legacy METEOR cannot run."""


def require_wordnet() -> None:
    """Fail early, in one line, when nltk's WordNet data is absent (nltk.download cannot work offline)."""
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
    except LookupError:
        raise WordNetMissingError(
            f"--legacy needs nltk's WordNet corpus for METEOR; install it with: {WORDNET_HINT}"
        ) from None
    except OSError as e:  # a copy missing files (an interrupted install): lexnames, index.sense, ...
        raise WordNetMissingError(
            f"--legacy needs nltk's WordNet corpus for METEOR, and the copy nltk finds is incomplete ({e}); "
            f"repair it with: {WORDNET_HINT}"
        ) from None


def word_overlap(reference_spans: Sequence[str], candidate: str) -> tuple[float, float, float]:
    """The reference's calculate_precision_recall: set overlap of lower-cased words."""
    ref_words = set(" ".join(reference_spans).lower().split())
    cand_words = set(candidate.lower().split())
    common = ref_words & cand_words
    precision = len(common) / len(cand_words) if cand_words else 0
    recall = len(common) / len(ref_words) if ref_words else 0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0
    return precision, recall, f1


def _rouge_f(rouge, reference_spans: list[str], prediction_spans: list[str]) -> dict[str, float]:
    # The rouge package refuses empty strings; an empty side overlaps nothing, so every f is 0.
    if len(reference_spans) != len(prediction_spans):  # the reference script would crash here
        reference_spans, prediction_spans = reference_spans[:1], prediction_spans[:1]
    if not all(s.strip() for s in reference_spans) or not all(s.strip() for s in prediction_spans):
        return {"ROUGE-1": 0.0, "ROUGE-2": 0.0, "ROUGE-L": 0.0}
    scores = rouge.get_scores(reference_spans, prediction_spans, avg=True)
    return {
        "ROUGE-1": scores["rouge-1"]["f"],
        "ROUGE-2": scores["rouge-2"]["f"],
        "ROUGE-L": scores["rouge-l"]["f"],
    }


def section_scores(reference_spans: list[str], prediction_spans: list[str], rouge) -> dict[str, float]:
    """All legacy figures for one section of one sample (spans as re.findall returned them)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from nltk.translate.meteor_score import meteor_score

    ref_tokens = [reference_spans[0].split()]
    hyp_tokens = prediction_spans[0].split()
    smoothie = SmoothingFunction().method7
    out = {
        key: sentence_bleu(ref_tokens, hyp_tokens, weights=w, smoothing_function=smoothie)
        for key, w in BLEU_WEIGHTS.items()
    }
    out["METEOR"] = meteor_score(ref_tokens, hyp_tokens)
    out.update(_rouge_f(rouge, reference_spans, prediction_spans))
    out["Precision"], out["Recall"], out["F1"] = word_overlap(reference_spans, prediction_spans[0])
    return out


def legacy_scores(references: Sequence[str], predictions: Sequence[str]) -> dict:
    """Score (reference, prediction) pairs the reference paper's way; one pair per line, plain averages.

    Returns {"findings": {B-1..F1}, "impression": {...}, "unparsed_predictions": n,
    "unparsed_references": {"findings": n, "impression": n}, "samples": n}.
    """
    from rouge import Rouge

    require_wordnet()
    rouge = Rouge()
    totals = {name: dict.fromkeys(LEGACY_KEYS, 0.0) for name in ("findings", "impression")}
    counts = dict.fromkeys(totals, 0)
    unparsed_refs = dict.fromkeys(totals, 0)
    unparsed_predictions = 0
    for reference, prediction in zip(references, predictions, strict=True):
        spans = {
            "findings": (FINDINGS_RE.findall(reference), FINDINGS_RE.findall(prediction)),
            "impression": (IMPRESSION_RE.findall(reference), IMPRESSION_RE.findall(prediction)),
        }
        if not spans["findings"][1] or not spans["impression"][1]:
            unparsed_predictions += 1  # the reference script regenerated until both parsed
        for name, (ref_spans, pred_spans) in spans.items():
            if not ref_spans:
                unparsed_refs[name] += 1
                continue
            scores = section_scores(ref_spans, pred_spans or [""], rouge)
            counts[name] += 1
            for key, value in scores.items():
                totals[name][key] += value
    result: dict = {
        name: {key: (value / counts[name] if counts[name] else 0.0) for key, value in sums.items()}
        for name, sums in totals.items()
    }
    result["unparsed_predictions"] = unparsed_predictions
    result["unparsed_references"] = unparsed_refs
    result["samples"] = len(references)
    return result
