"""Clinical-efficacy scores: CheXpert-14 label F1 of generated reports against their references, and
RadGraph-F1 where its package is installed.

Each report and each reference is labelled (the offline rrg.score.clinical.labeler labeler by default, or CheXbert
through the f1chexbert package), every observation becomes positive vs the rest, and precision, recall
and F1 are computed over studies, as the CheXbert-F1 literature does (f1chexbert's "rrg" mode, used by
LLaVA-Rad, MAIRA-2, CheXagent and others): micro F1 from the tp/fp/fn summed over the observations,
macro F1 as the mean of per-observation F1, over all 14 and over the 5 most used (Atelectasis,
Cardiomegaly, Consolidation, Edema, Pleural Effusion). An uncertain label counts as positive by default,
as in f1chexbert's "rrg" mode; `uncertain="negative"` is the other convention (R2Gen's compute_ce.py).
A ratio with a zero denominator is 0, as scikit-learn's default.

Bootstrap intervals come from the same study resample weights as the n-gram metrics: tp/fp/fn of a
resample are weighted sums of per-study indicators, so every resample is exact.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Sequence
from typing import Literal

import numpy as np

from rrg.io import InputError
from rrg.score.clinical.labeler import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, Labels, label_reports

FIVE = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
LABELERS = ("offline", "chexbert", "none")
UNCERTAIN_AS = ("positive", "negative")
# The summary keys of the card's "clinical" block (and of its ci95 and image-control delta).
SUMMARY_KEYS = (
    "f1_micro_14", "f1_macro_14", "f1_micro_5", "f1_macro_5",
    "precision_micro_14", "recall_micro_14", "precision_micro_5", "recall_micro_5",
    "f1_micro_13",  # micro F1 of the 13 observations other than No Finding
)  # fmt: skip
F1_KEYS = SUMMARY_KEYS[:4]
# What tables and figures call the labelers and the summary keys: a column always names its labeler, since
# the offline rules read higher than CheXbert on the same texts (docs/leaderboard-metrics.md).
LABELER_NAMES = {"offline": "CheXpert rules (offline)", "chexbert": "CheXbert"}
CLINICAL_NAMES = {
    "f1_micro_14": "F1-14 micro",
    "f1_macro_14": "F1-14 macro",
    "f1_micro_5": "F1-5 micro",
    "f1_macro_5": "F1-5 macro",
    "f1_micro_13": "F1 micro without No Finding",
    "precision_micro_14": "precision-14 micro",
    "recall_micro_14": "recall-14 micro",
    "precision_micro_5": "precision-5 micro",
    "recall_micro_5": "recall-5 micro",
}
REQUIREMENTS_FILE = "requirements-clinical.txt"
BACKEND_PACKAGES = {"offline": ("spacy", "negspacy"), "chexbert": ("f1chexbert",), "none": ()}


class BackendUnavailable(InputError):
    """An optional model-based scorer could not be loaded (package missing, or weights not cached)."""


# --------------------------------------------------------------------------------------------------
# Arithmetic


def binarize(labels: Sequence[Labels], uncertain: Literal["positive", "negative"] = "positive") -> np.ndarray:
    """(N, 14) booleans: observation positive (and uncertain, when uncertain="positive") vs the rest."""
    if uncertain not in UNCERTAIN_AS:
        raise InputError(f"uncertain must be one of {UNCERTAIN_AS}, got {uncertain!r}")
    yes = {POSITIVE, UNCERTAIN} if uncertain == "positive" else {POSITIVE}
    return np.array([[row.get(o) in yes for o in OBSERVATIONS] for row in labels], dtype=bool).reshape(
        -1, len(OBSERVATIONS)
    )


def confusion_counts(
    pred: np.ndarray, ref: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """tp, fp, fn per observation: shape (14,), or (B, 14) for resample weights of shape (B, N)."""
    per_study = {
        "tp": (pred & ref).astype(float),
        "fp": (pred & ~ref).astype(float),
        "fn": (~pred & ref).astype(float),
    }
    if weights is None:
        return {k: v.sum(axis=0) for k, v in per_study.items()}
    return {k: weights @ v for k, v in per_study.items()}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 (= 2tp / (2tp + fp + fn)); 0 where a denominator is 0."""
    return _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)


def summary_scores(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """SUMMARY_KEYS from per-observation counts (last axis: OBSERVATIONS); works on (14,) or (B, 14)."""
    out = {}
    for suffix, names in (("14", OBSERVATIONS), ("5", FIVE)):
        idx = [OBSERVATIONS.index(o) for o in names]
        tp, fp, fn = (counts[k][..., idx] for k in ("tp", "fp", "fn"))
        precision, recall, f1 = prf(tp.sum(-1), fp.sum(-1), fn.sum(-1))
        out[f"f1_micro_{suffix}"] = f1
        out[f"f1_macro_{suffix}"] = prf(tp, fp, fn)[2].mean(-1)
        out[f"precision_micro_{suffix}"] = precision
        out[f"recall_micro_{suffix}"] = recall
    # Without No Finding: on IU X-Ray most studies are normal, and a constant "normal" report scores its
    # F1-14 mostly on that one label.
    idx = [j for j, o in enumerate(OBSERVATIONS) if o != "No Finding"]
    tp, fp, fn = (counts[k][..., idx].sum(-1) for k in ("tp", "fp", "fn"))
    out["f1_micro_13"] = prf(tp, fp, fn)[2]
    return {k: out[k] for k in SUMMARY_KEYS}


def per_observation(counts: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    precision, recall, f1 = prf(counts["tp"], counts["fp"], counts["fn"])
    return {
        o: {
            "precision": float(precision[j]),
            "recall": float(recall[j]),
            "f1": float(f1[j]),
            "tp": int(counts["tp"][j]),
            "fp": int(counts["fp"][j]),
            "fn": int(counts["fn"][j]),
        }
        for j, o in enumerate(OBSERVATIONS)
    }


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def label_f1(
    pred_labels: Sequence[Labels],
    ref_labels: Sequence[Labels],
    uncertain: Literal["positive", "negative"] = "positive",
    weights: np.ndarray | None = None,
) -> dict:
    """{"summary": {SUMMARY_KEYS}, "per_observation": {obs: precision, recall, f1, tp, fp, fn}} and,
    with resample weights (B, N), "ci95": {summary key: [lo, hi], "per_observation": {obs: {"f1": [lo, hi]}}}."""
    if len(pred_labels) != len(ref_labels):
        raise InputError(f"{len(pred_labels)} predicted label rows for {len(ref_labels)} references")
    pred, ref = binarize(pred_labels, uncertain), binarize(ref_labels, uncertain)
    counts = confusion_counts(pred, ref)
    out: dict = {
        "summary": {k: float(v) for k, v in summary_scores(counts).items()},
        "per_observation": per_observation(counts),
    }
    if weights is not None:
        resampled = confusion_counts(pred, ref, weights)
        f1 = prf(resampled["tp"], resampled["fp"], resampled["fn"])[2]
        out["ci95"] = {k: _interval(v) for k, v in summary_scores(resampled).items()}
        out["ci95"]["per_observation"] = {o: {"f1": _interval(f1[:, j])} for j, o in enumerate(OBSERVATIONS)}
    return out


# --------------------------------------------------------------------------------------------------
# Labelers


def _missing_package(package: str, what: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"{what} needs the '{package}' package, which is not installed: pip install -r {REQUIREMENTS_FILE} "
        "(or use the default --labeler offline)"
    )


def _unloadable(what: str, files: str, error: Exception) -> BackendUnavailable:
    reason = " ".join(str(error).split())[:200]
    return BackendUnavailable(
        f"{what} could not load its model ({files}, downloaded from the Hugging Face Hub on first use and "
        f"cached): {type(error).__name__}: {reason}. Run it once where the Hub is reachable, or copy the "
        "cache from such a machine; --labeler offline needs no download"
    )


def chexbert_labels(texts: Sequence[str]) -> list[Labels]:
    """CheXbert's labels through the f1chexbert package (its own model and label mapping, not ours)."""
    try:
        from f1chexbert import F1CheXbert
    except ImportError:
        raise _missing_package("f1chexbert", "--labeler chexbert") from None
    try:
        model = F1CheXbert(device="cpu" if not _cuda() else None)
    except Exception as e:  # the package raises whatever its download or torch.load raised
        raise _unloadable(
            "--labeler chexbert", "chexbert.pth from StanfordAIMI/RRG_scorers, bert-base-uncased", e
        ) from None
    names = list(model.target_names)
    as_label = {1: POSITIVE, 0: NEGATIVE, -1: UNCERTAIN, "": None}
    out = []
    for text in texts:
        values = model.get_label(text.strip(), mode="classification")
        out.append({o: as_label[values[names.index(o)]] for o in OBSERVATIONS})
    return out


def radgraph_f1(hyps: Sequence[str], refs: Sequence[str], weights: np.ndarray | None = None) -> dict:
    """RadGraph-F1 (simple, partial, complete reward, mean over studies) through the radgraph package."""
    try:
        from radgraph import F1RadGraph
    except ImportError:
        raise _missing_package("radgraph", "--radgraph") from None
    try:
        scorer = F1RadGraph(reward_level="all", model_type="radgraph")
    except Exception as e:
        raise _unloadable("--radgraph", "radgraph.tar.gz from StanfordAIMI/RRG_scorers", e) from None
    _, rewards, _, _ = scorer(hyps=list(hyps), refs=list(refs))
    out: dict = {"model": "radgraph", "version": _version("radgraph")}
    per_study = {
        f"radgraph_{level}": np.asarray(r, dtype=float)
        for level, r in zip(("simple", "partial", "complete"), rewards)
    }
    out["scores"] = {k: float(v.mean()) for k, v in per_study.items()}
    if weights is not None:
        out["ci95"] = {k: _interval(weights @ v / len(v)) for k, v in per_study.items()}
    return out


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def labels_for(texts: Sequence[str], labeler: str) -> list[Labels]:
    if labeler == "offline":
        return label_reports(texts, progress=True)
    if labeler == "chexbert":
        return chexbert_labels(texts)
    raise InputError(f"unknown labeler {labeler!r} (expected one of {LABELERS})")


# --------------------------------------------------------------------------------------------------
# The card's "clinical" block


def check_backends(labeler: str, radgraph: bool, uncertain: str = "positive") -> None:
    """Fail before the slow scoring when a chosen optional backend's package is missing."""
    if labeler not in LABELERS:
        raise InputError(f"unknown labeler {labeler!r} (expected one of {LABELERS})")
    if uncertain not in UNCERTAIN_AS:
        raise InputError(f"uncertain must be one of {UNCERTAIN_AS}, got {uncertain!r}")
    for wanted, package, flag in (
        (labeler == "chexbert", "f1chexbert", "--labeler chexbert"),
        (radgraph, "radgraph", "--radgraph"),
    ):
        if wanted:
            try:
                importlib.import_module(package)
            except ImportError:
                raise _missing_package(package, flag) from None


def clinical_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    labeler: str = "offline",
    uncertain: Literal["positive", "negative"] = "positive",
    radgraph: bool = False,
    weights: np.ndarray | None = None,
) -> dict:
    """The card's "clinical" block for one prediction and one reference text per study (README lists
    its keys). weights: the n-gram metrics' study resample weights (B, N), or None for no intervals."""
    check_backends(labeler, radgraph, uncertain)
    block: dict = {
        "labeler": labeler,
        "versions": {p: _version(p) for p in BACKEND_PACKAGES[labeler] + (("radgraph",) if radgraph else ())},
        "uncertain": uncertain,
        "studies": len(predictions),
    }
    if labeler != "none":
        pred_labels = labels_for(predictions, labeler)
        ref_labels = labels_for(references, labeler)
        block.update(label_f1(pred_labels, ref_labels, uncertain, weights))
    if radgraph:
        block["radgraph"] = radgraph_f1(predictions, references, weights)
    return block


def delta_table(card: dict) -> dict[str, dict[str, float]]:
    """{"clinical": {F1 summary keys and RadGraph scores}} of a card, for the image-control delta;
    {} when the card has no clinical block."""
    block = card.get("clinical")
    if not block:
        return {}
    table = {k: block["summary"][k] for k in F1_KEYS} if "summary" in block else {}
    table.update(block.get("radgraph", {}).get("scores", {}))
    return {"clinical": table} if table else {}


def format_clinical(block: dict) -> str:
    """A few lines for the printed card: the F1 summary (with intervals) and per-observation F1."""
    lines = [
        f"clinical ({block['labeler']} CheXpert-14 labels, uncertain = {block['uncertain']}, "
        f"{block['studies']} studies; positive vs rest):"
    ]
    if "summary" in block:
        ci = block.get("ci95", {})
        cells = []
        for key in F1_KEYS:
            cell = f"{key} {block['summary'][key]:.4f}"
            if key in ci:
                cell += f" [{ci[key][0]:.3f}-{ci[key][1]:.3f}]"
            cells.append(cell)
        lines.append("  " + "   ".join(cells))
        per = block["per_observation"]
        lines.append(
            "  F1 per observation: "
            + ", ".join(
                f"{o} {v['f1']:.2f} ({v['tp']}/{v['fp']}/{v['fn']})"
                for o, v in per.items()
                if v["tp"] + v["fp"] + v["fn"]  # observations neither side has are left out here
            )
            + "  (tp/fp/fn)"
        )
    if "radgraph" in block:
        lines.append(
            "  RadGraph-F1: " + ", ".join(f"{k} {v:.4f}" for k, v in block["radgraph"]["scores"].items())
        )
    return "\n".join(lines)
