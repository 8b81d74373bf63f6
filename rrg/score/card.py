"""Report-generation metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr with the pycocoevalcap scorers.

Figures are corpus-level, as the IU X-Ray literature (R2Gen and followers) reports them: BLEU from the
corpus n-gram counts, METEOR from meteor-1.5.jar's aggregated statistics, ROUGE-L and CIDEr as means
over samples (CIDEr's document frequencies from the scored references). Text is normalised the R2Gen
way by default (`normalize_report`). SPICE is left out: it needs a download (Stanford CoreNLP) that
cannot happen offline.

Bootstrap confidence intervals resample studies and are exact for every metric: each metric is a
function of per-sample statistics computed once (BLEU: n-gram counts and lengths, whose corpus score
is a function of their sums; ROUGE-L: per-sample scores; METEOR: the jar's per-sample statistic
vectors, re-aggregated in numpy with the jar's formula; CIDEr: per-sample n-gram tables, with the
document frequencies recomputed from the references of each resample, as pycocoevalcap would on the
resampled corpus). Tests check each against pycocoevalcap on explicit resamples."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from tqdm import tqdm

from rrg.data.entries import study_id_from_filename
from rrg.data.sections import Sections, parse_sections
from rrg.io import InputError, iter_jsonl
from rrg.score.meteor import METEOR_MAX_WORDS, MeteorScorer, meteor_cuts, meteor_from_stats
from rrg.score.ngram import (
    METRICS,
    SECTIONS,
    CiderStats,
    bleu_from_stats,
    bleu_sample_stats,
    normalize_report,
)

# Every scorer's input is bounded before any work starts, as METEOR's is: pycocoevalcap's ROUGE-L
# builds a length x length table (a 50 MB one-line prediction grew it past 13 GB), spaCy refuses texts
# over 1,000,000 characters (after minutes of work) and BLEU/CIDEr count every n-gram. Each prediction
# and reference is cut to its first SCORER_MAX_WORDS words and SCORER_MAX_CHARS characters, ~4x and ~7x
# the longest IU X-Ray report (230 words, 1,417 characters): only degenerate texts are cut, and the
# card counts them (counts.texts_cut).
SCORER_MAX_WORDS = METEOR_MAX_WORDS
SCORER_MAX_CHARS = 10_000
_FIRST_SCORER_WORDS = re.compile(rf"\s*(?:\S+\s+){{{SCORER_MAX_WORDS - 1}}}\S+")


def bound_text(text: str) -> str:
    """The text as every scorer sees it: its first SCORER_MAX_CHARS characters, then its first
    SCORER_MAX_WORDS words (spacing kept, for raw scoring)."""
    text = text[:SCORER_MAX_CHARS]
    match = _FIRST_SCORER_WORDS.match(text)
    return text[: match.end()] if match else text


def bound_records(records: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """Records with prediction and references bounded (bound_text), and how many texts were cut."""
    cut = {"prediction": 0, "reference": 0}
    bounded = []
    for record in records:
        pred = bound_text(record["prediction"])
        cut["prediction"] += pred != record["prediction"]
        refs = record["reference"]
        if isinstance(refs, str):
            new_refs = bound_text(refs)
            cut["reference"] += new_refs != refs
        else:
            new_refs = [bound_text(r) for r in refs]
            cut["reference"] += sum(a != b for a, b in zip(new_refs, refs))
        bounded.append({**record, "prediction": pred, "reference": new_refs})
    return bounded, cut


@dataclass
class SectionScorer:
    """Per-sample statistics of one section, computed once: the point estimate and every resample
    come from them."""

    hyps: list[str]
    refs: list[list[str]]
    meteor_stats: list[str]
    bleu: np.ndarray
    rouge: np.ndarray
    cider: CiderStats

    @classmethod
    def build(
        cls, hyps: Sequence[str], refs: Sequence[Sequence[str]], meteor: MeteorScorer | None
    ) -> SectionScorer:
        hyps, refs = list(hyps), [list(r) for r in refs]
        rouge = Rouge()
        return cls(
            hyps=hyps,
            refs=refs,
            meteor_stats=meteor.stats_many(hyps, refs) if meteor else [],
            bleu=bleu_sample_stats(hyps, refs),
            rouge=np.asarray([rouge.calc_score([h], r) for h, r in zip(hyps, refs)], dtype=float),
            cider=CiderStats.build(hyps, refs),
        )

    def point(self, meteor: MeteorScorer | None) -> dict[str, float]:
        """The published-protocol figures (pycocoevalcap's own classes, and the jar's EVAL for METEOR)."""
        if not self.hyps:
            return dict.fromkeys(METRICS if meteor else [m for m in METRICS if m != "METEOR"], 0.0)
        gts = {i: r for i, r in enumerate(self.refs)}
        res = {i: [h] for i, h in enumerate(self.hyps)}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out = {f"BLEU-{k + 1}": float(b) for k, b in enumerate(bleu)}
        if meteor:
            out["METEOR"] = meteor.corpus_score(self.meteor_stats)
        out["ROUGE-L"] = float(self.rouge.mean())
        has_ngrams = any(r.split() for refs in self.refs for r in refs)  # Cider fails on an all-empty corpus
        out["CIDEr"] = float(Cider().compute_score(gts, res)[0]) if has_ngrams else 0.0
        return out

    def resampled(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric for each resample (weights: (B, N) counts of each sample in each resample)."""
        n = weights.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {f"BLEU-{k + 1}": col for k, col in enumerate(bleu_from_stats(self.bleu, weights).T)}
            if self.meteor_stats:
                stats = np.asarray([s.split() for s in self.meteor_stats], dtype=float)
                out["METEOR"] = meteor_from_stats(stats, weights)
            out["ROUGE-L"] = (weights @ self.rouge) / n
        out["CIDEr"] = self.cider.scores(weights)
        return out


def corpus_scores(
    gts: dict, res: dict, metrics: Iterable[str] = METRICS, meteor: MeteorScorer | None = None
) -> dict[str, float]:
    """pycocoevalcap's corpus scores of res (id -> [hypothesis]) against gts (id -> [references]).

    Strings are scored as given (no tokenisation). Keys are METRICS' names ("BLEU-1".."BLEU-4", "METEOR",
    "ROUGE-L", "CIDEr"); COCO_NAMES maps them to pycocoevalcap's ("Bleu_1", ..., "ROUGE_L"). METEOR starts
    a JVM unless a running MeteorScorer is passed.
    """
    metrics = tuple(metrics)
    if gts.keys() != res.keys():
        raise InputError("corpus_scores: gts and res must have the same ids")
    ids = list(gts)
    hyps = []
    for i in ids:
        if len(res[i]) != 1:
            raise InputError(f"corpus_scores: id {i!r} must have exactly one hypothesis")
        hyps.append(res[i][0])
    own_meteor = "METEOR" in metrics and meteor is None
    if own_meteor:
        meteor = MeteorScorer()
    try:
        scorer = SectionScorer.build(hyps, [gts[i] for i in ids], meteor if "METEOR" in metrics else None)
        scores = scorer.point(meteor if "METEOR" in metrics else None)
    finally:
        if own_meteor:
            meteor.close()
    return {m: scores[m] for m in metrics}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) counts: how often each study is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    weights = np.zeros((n_resamples, n))
    np.add.at(weights, (np.arange(n_resamples)[:, None], draws), 1.0)
    return weights


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Read a predictions JSONL (id, prediction, reference[, study_id, images]); errors name file:line.

    Each record gets "_where" ("file:line") so later messages can point at the line.
    """
    records = []
    for line, record in iter_jsonl(path):
        where = f"{path}:{line}"
        _check_record(record, where)
        records.append({**record, "_where": where})
    if not records:
        raise InputError(f"{path}: no predictions")
    return records


def _check_record(record: dict, where: str) -> None:
    for key in ("prediction", "reference"):
        if key not in record or record[key] is None:
            raise InputError(f"{where}: missing field {key!r}")
    if not isinstance(record["prediction"], str):
        raise InputError(f"{where}: field 'prediction' must be a string")
    refs = record["reference"]
    refs = [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise InputError(f"{where}: field 'reference' must be a string or a non-empty list of strings")
    if not any(r.strip() for r in refs):
        raise InputError(f"{where}: field 'reference' is empty")


def _study_id(record: dict) -> str:
    if record.get("study_id") is not None:
        return str(record["study_id"])
    images = record.get("images")
    if isinstance(images, list) and images and isinstance(images[0], str):
        return study_id_from_filename(images[0])
    if record.get("id") is not None:
        return str(record["id"])
    return record["_where"]  # nothing to group by: each line is its own study


def _references(record: dict) -> list[str]:
    refs = record["reference"]
    return [refs] if isinstance(refs, str) else list(refs)


def _meteor_cut_count(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> int:
    return sum(map(meteor_cuts, hyps)) + sum(meteor_cuts(r) for ref_list in refs for r in ref_list)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in ("pycocoevalcap", "nltk", "rouge"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        versions["java"] = (out.stderr or out.stdout).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        versions["java"] = None
    return versions


RAW_TEXT_NOTE = (
    "text raw: BLEU, ROUGE-L and CIDEr get every text exactly as given (only cut where a section heading "
    "was); METEOR's jar reads one text per line with fields split by '|||', so it gets line breaks and "
    "'|||' as spaces"
)


def pick_studies(records: list[dict], study_ids: list[str], per_image: bool) -> list[dict]:
    """The lines that are scored: every line with per_image, else each study's first (file order)."""
    kept, seen = [], set()
    for record, study in zip(records, study_ids):
        if per_image or study not in seen:
            kept.append(record)
        seen.add(study)
    if dropped := len(records) - len(kept):
        _say(f"scoring {len(kept)} studies once each: dropped {dropped} further view(s) of the same studies")
    return kept


@dataclass
class SectionTexts:
    """Each section's (hypotheses, references), the positions in the scored lines of its samples (the
    bootstrap resamples studies by them), what was missing, and how many predictions were empty."""

    texts: dict[str, tuple[list[str], list[list[str]]]]
    rows: dict[str, list[int]]
    missing: dict[str, dict[str, int]]
    empty_predictions: int


def section_texts(kept: list[dict], parse: Callable[..., Sections], normalize: bool) -> SectionTexts:
    """Split every scored line's prediction and references into sections. A study whose references
    lack a section does not count for that section."""
    # Raw: every text exactly as given (only cut where a section heading was), byte for byte.
    clean = normalize_report if normalize else str
    empty_predictions = 0
    missing = {s: {"prediction": 0, "reference": 0} for s in ("findings", "impression")}
    texts: dict = {s: ([], []) for s in SECTIONS}
    rows: dict = {s: [] for s in SECTIONS}
    for i, record in enumerate(kept, start=1):
        if not record["prediction"].strip():
            empty_predictions += 1
            if empty_predictions <= 5:
                _say(f"warning: {record.get('_where', f'record {i}')}: empty prediction (scored as empty)")
        pred = parse(record["prediction"], keep_spacing=not normalize)
        refs = [parse(r, keep_spacing=not normalize) for r in _references(record)]
        texts["report"][0].append(clean(pred.body))
        texts["report"][1].append([clean(r.body) for r in refs])
        rows["report"].append(i - 1)
        for section in ("findings", "impression"):
            pred_text = getattr(pred, section)
            ref_texts = [getattr(r, section) for r in refs if getattr(r, section) is not None]
            missing[section]["prediction"] += pred_text is None
            if not ref_texts:
                missing[section]["reference"] += 1
                continue
            texts[section][0].append(clean(pred_text or ""))
            texts[section][1].append([clean(r) for r in ref_texts])
            rows[section].append(i - 1)
    if empty_predictions > 5:
        _say(f"warning: {empty_predictions} empty predictions in all")
    return SectionTexts(texts, rows, missing, empty_predictions)


def score_records(
    records: list[dict],
    *,
    normalize: bool = True,
    per_image: bool = False,
    bootstrap: int = 0,
    seed: int = 0,
    legacy: bool = False,
    source: str = "",
    meteor: MeteorScorer | None = None,
    labeler: str = "offline",
    uncertain: str = "positive",
    radgraph: bool = False,
    parse: Callable[..., Sections] = parse_sections,
    radeval=None,
) -> dict:
    """Score generated reports; returns the metric card (docs/formats.md lists its keys): the studies
    picked (pick_studies), their section texts (section_texts), then every block of the card.

    records: dicts with "prediction" and "reference" (a string or a list of strings), optionally
    "study_id", "images", "id". Unless per_image, only the first line of each study (file order) is
    scored; the dropped lines are counted. Legacy scoring (the reference paper's code) always runs on
    every line. A running MeteorScorer may be passed to reuse its JVM (it is left open).
    labeler ("offline", "chexbert" or "none"), uncertain and radgraph choose the "clinical" block
    (rrg.score.clinical.f1): CheXpert-14 label F1 of each study's prediction against its first reference.
    `parse` splits a text into sections (rrg.score.r2gen_compat passes one that keeps R2Gen's texts whole);
    it takes keep_spacing like parse_sections. radeval: an rrg.score.radeval.RadEvalBackend whose metrics fill
    the "radeval" block, with intervals on the same study resamples as every other block.
    """
    for i, record in enumerate(records, start=1):
        _check_record(record, record.get("_where", f"record {i}"))
    if not records:
        raise InputError(f"{source or 'records'}: no predictions to score")
    records, texts_cut = bound_records(records)  # before any scorer (or the labeler) sees a text
    if any(texts_cut.values()):
        _say(
            f"warning: {texts_cut['prediction']} prediction(s) and {texts_cut['reference']} reference(s) "
            f"cut to {SCORER_MAX_WORDS} words / {SCORER_MAX_CHARS} characters (counts.texts_cut)"
        )
    if legacy:  # fail before the slow part when WordNet is missing
        from rrg.score.legacy import require_wordnet

        require_wordnet()
    from rrg.score.clinical.f1 import check_backends, clinical_scores

    check_backends(labeler, radgraph, uncertain)  # a missing optional package fails before the slow part

    study_ids = [_study_id(r) for r in records]
    kept = pick_studies(records, study_ids, per_image)
    dropped = len(records) - len(kept)
    sections = section_texts(kept, parse, normalize)
    texts, rows, missing = sections.texts, sections.rows, sections.missing
    empty_predictions = sections.empty_predictions

    card: dict = {"metrics": {}}
    own_meteor = meteor is None
    meteor = meteor or MeteorScorer()
    try:
        scorers = {}
        for section in tqdm(SECTIONS, desc="scoring", unit="section", disable=None):
            scorers[section] = SectionScorer.build(*texts[section], meteor)
            # A section no reference has gets null figures, not zeros that would read as a score.
            card["metrics"][section] = (
                scorers[section].point(meteor) if rows[section] else dict.fromkeys(METRICS)
            )
    finally:
        if own_meteor:
            meteor.close()
    # One set of study resamples for every interval: the n-gram metrics' and the clinical block's.
    weights = resample_weights(len(kept), bootstrap, seed) if bootstrap else None
    if bootstrap:
        card["ci95"] = {}
        for section in SECTIONS:  # the same draws of studies for every section and metric
            if not rows[section]:
                card["ci95"][section] = None
                continue
            values = scorers[section].resampled(weights[:, rows[section]])
            card["ci95"][section] = {m: percentile_interval(values[m]) for m in METRICS if m in values}
    if legacy:
        from rrg.score.legacy import legacy_scores

        result = legacy_scores([_references(r)[0] for r in records], [r["prediction"] for r in records])
        card["legacy"] = {**result, "per_line": True}
    if labeler != "none" or radgraph:
        card["clinical"] = clinical_scores(
            [r["prediction"] for r in kept],
            [_references(r)[0] for r in kept],
            labeler=labeler,
            uncertain=uncertain,
            radgraph=radgraph,
            weights=weights,
        )
    from rrg.score.rexrank_bleu import block as rexrank_bleu

    # ReXrank's own BLEU-2 beside ours: a row placed on the leaderboard's scale needs its figure, not ours.
    card["rexrank_bleu"] = rexrank_bleu(
        [r["prediction"] for r in kept], [_references(r)[0] for r in kept], weights
    )
    if radeval is not None:
        card["radeval"] = radeval.block(
            [r["prediction"] for r in kept], [_references(r)[0] for r in kept], weights
        )
    card["counts"] = {
        "lines": len(records),
        "studies": len(set(study_ids)),
        "scored": len(kept),
        "duplicate_views_dropped": dropped,
        "empty_predictions": empty_predictions,
        "missing_findings": missing["findings"],
        "missing_impression": missing["impression"],
        "sections_scored": {s: len(texts[s][0]) for s in SECTIONS},
        "meteor_texts_cut": {s: _meteor_cut_count(*texts[s]) for s in SECTIONS},
        "texts_cut": texts_cut,
    }
    card["settings"] = {
        "normalize": normalize,
        "per_image": per_image,
        "bootstrap": bootstrap,
        "seed": seed,
        "legacy": legacy,
        "predictions": str(source),
    }
    card["notes"] = [
        "corpus-level pycocoevalcap scores; SPICE left out (needs a download)",
        "text R2Gen-normalised" if normalize else RAW_TEXT_NOTE,
        f"METEOR sees at most {METEOR_MAX_WORDS} words of a text (counts.meteor_texts_cut: texts cut)",
        f"every prediction and reference is cut to {SCORER_MAX_WORDS} words and {SCORER_MAX_CHARS} characters "
        "before scoring (counts.texts_cut: texts cut)",
        "one line per study (first in file order)" if not per_image else "every line scored (per image)",
    ]
    if bootstrap:
        card["notes"].append(
            "ci95: percentile interval over study resamples, every metric exact per resample"
        )
    if legacy:
        card["notes"].append("legacy: the reference paper's metric code, on every line (per image)")
    card["versions"] = _tool_versions()
    return card


def format_card(card: dict) -> str:
    """A small plain-text table of the card: one row per section, one column per metric (and a row of
    95% intervals under each section when the card has them)."""
    width = 13 if "ci95" in card else 9
    lines = [f"{'':<11}" + "".join(f"{m:>{width}}" for m in METRICS)]
    for section in SECTIONS:
        scores = card["metrics"].get(section, {})
        cells = ("-" if scores.get(m) is None else f"{scores[m]:.4f}" for m in METRICS)
        lines.append(f"{section:<11}" + "".join(f"{c:>{width}}" for c in cells))
        ci = card.get("ci95", {}).get(section)
        if ci:
            cells = (f"{ci[m][0]:.3f}-{ci[m][1]:.3f}" if m in ci else "" for m in METRICS)
            lines.append(f"{'  95% CI':<11}" + "".join(f"{c:>{width}}" for c in cells))
    counts = card["counts"]
    lines.append(
        f"studies scored: {counts['scored']} of {counts['lines']} lines "
        f"({counts['duplicate_views_dropped']} duplicate views dropped, {counts['empty_predictions']} empty "
        f"predictions); predictions missing findings/impression: "
        f"{counts['missing_findings']['prediction']}/{counts['missing_impression']['prediction']}"
    )
    lines.append(f"text: {'R2Gen-normalised' if card['settings']['normalize'] else 'raw'}")
    if "legacy" in card:
        legacy = card["legacy"]
        keys = list(legacy["findings"])
        lines.append("legacy (the reference paper's metric code, every line):")
        lines.append(f"{'':<11}" + "".join(f"{k:>10}" for k in keys))
        for section in ("findings", "impression"):
            lines.append(f"{section:<11}" + "".join(f"{legacy[section][k]:>10.4f}" for k in keys))
        lines.append(f"unparsed predictions: {legacy['unparsed_predictions']}")
    if card.get("rexrank_bleu", {}).get("bleu2") is not None:
        block = card["rexrank_bleu"]
        ci = f" [{block['ci95'][0]:.3f}-{block['ci95'][1]:.3f}]" if "ci95" in block else ""
        lines.append(f"ReXrank BLEU-2 (CXR-Report-Metric's, mean over studies, raw text): {block['bleu2']:.4f}{ci}")
    if "radeval" in card:
        from rrg.score.radeval import format_block

        lines.append(format_block(card["radeval"]))
    if "clinical" in card:
        from rrg.score.clinical.f1 import format_clinical

        lines.append(format_clinical(card["clinical"]))
    return "\n".join(lines)
