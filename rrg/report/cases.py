"""Study by study: the cases behind an average, for the case browser (plot/browse.py) and the
qualitative figure (plot/qualitative.py).

A run is a predictions.jsonl written by eval (with scores.json and the image-control predictions beside
it when present). Each study is shown once, as the scorer counts it: its first line in file order
(rrg.score.card). Per study:
- the BLEU-4 and ROUGE-L of its report against the reference, with pycocoevalcap's scorers on the
  R2Gen-normalised report body (headings removed), exactly as eval/score.py scores the "report" section;
- the words the prediction shares with the reference: the longest common subsequence of the two word
  sequences (what ROUGE-L counts), each word compared in its R2Gen-normalised form, so "Heart," and
  "heart" match and punctuation never does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge

from rrg.data.entries import ImageNotFound, load_entries, resolve_image
from rrg.data.sections import parse_sections, section_pieces
from rrg.generate.shards import scores_path
from rrg.io import InputError, read_json_object
from rrg.model.prompts import REPORT_QUESTION
from rrg.score.card import _study_id, read_predictions
from rrg.score.ngram import normalize_report

STUDY_METRICS = ("BLEU-4", "ROUGE-L")


def _say(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------------
# Words and their overlap


@dataclass
class Words:
    """A report as shown: its body's words (single spaces) and where each section starts."""

    text: str
    marks: list[tuple[int, str]] = field(default_factory=list)  # (index of first word, "findings")

    @property
    def words(self) -> list[str]:
        return self.text.split(" ") if self.text else []


def report_words(report: str) -> Words:
    """The report body as scored (section headings removed), with the position of each heading."""
    words: list[str] = []
    marks: list[tuple[int, str]] = []
    for section, content in section_pieces(report):
        if section is not None:
            marks.append((len(words), section))
        words.extend(content.split())
    return Words(" ".join(words), marks)


@lru_cache(maxsize=65536)
def word_key(word: str) -> str:
    """A word's R2Gen-normalised form ('Heart,' -> 'heart'); '' for punctuation alone."""
    return " ".join(token for token in normalize_report(word).split() if token != ".")


def lcs_pairs(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs (i, j), a[i] == b[j], of one longest common subsequence of a and b.

    The dynamic-programming table is filled a row at a time with numpy: row i is the running maximum of
    max(row i-1, row i-1 shifted + 1 where a[i] matches), which is the usual recurrence.
    """
    n, m = len(a), len(b)
    if not n or not m:
        return []
    vocab: dict[str, int] = {}
    codes_a = np.array([vocab.setdefault(w, len(vocab)) for w in a])
    codes_b = np.array([vocab.setdefault(w, len(vocab)) for w in b])
    table = np.zeros((n + 1, m + 1), dtype=np.int32)
    for i in range(1, n + 1):
        diagonal = np.where(codes_b == codes_a[i - 1], table[i - 1, :-1] + 1, 0)
        table[i, 1:] = np.maximum.accumulate(np.maximum(table[i - 1, 1:], diagonal))
    pairs = []
    i, j = n, m
    while i and j:
        if codes_a[i - 1] == codes_b[j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif table[i - 1, j] >= table[i, j - 1]:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


LIST_NUMBERS = {"1.", "2.", "3.", "4.", "5."}


def scored_words(words: Sequence[str]) -> list[tuple[int, str]]:
    """(index, normalised form) of the words the scorer sees: not punctuation alone, and not the list
    numbers "1." to "5." that normalize_report removes when a word follows them."""
    out = []
    for i, word in enumerate(words):
        if word in LIST_NUMBERS and i + 1 < len(words) and (i > 0 or word == "1."):
            continue
        key = word_key(word)
        if key:
            out.append((i, key))
    return out


def overlap(prediction: Words, reference: Words) -> tuple[list[int], list[int]]:
    """Indices of the prediction's and the reference's words in their longest common subsequence of
    normalised words (scored_words: punctuation and list numbers never match)."""
    keyed = []
    for words in (prediction.words, reference.words):
        pairs = scored_words(words)
        keyed.append(([i for i, _ in pairs], [key for _, key in pairs]))
    (pred_pos, pred_keys), (ref_pos, ref_keys) = keyed
    pairs = lcs_pairs(pred_keys, ref_keys)
    return [pred_pos[i] for i, _ in pairs], [ref_pos[j] for _, j in pairs]


# ---------------------------------------------------------------------------------------------------
# Per-study scores


def study_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[dict[str, float]]:
    """BLEU-4 and ROUGE-L of each prediction alone against its references, on the normalised report body
    (eval/score.py's "report" section). BLEU-4 is pycocoevalcap's sentence score, i.e. the corpus score
    of a one-study corpus; the mean ROUGE-L over studies is the card's corpus ROUGE-L."""
    if not predictions:
        return []
    hyps = {i: [normalize_report(parse_sections(p).body)] for i, p in enumerate(predictions)}
    refs = {i: [normalize_report(parse_sections(r).body) for r in rs] for i, rs in enumerate(references)}
    _, bleu = Bleu(4).compute_score(refs, hyps, verbose=0)
    rouge = Rouge()
    return [{"BLEU-4": float(bleu[3][i]), "ROUGE-L": float(rouge.calc_score(hyps[i], refs[i]))} for i in hyps]


# ---------------------------------------------------------------------------------------------------
# Runs


@dataclass
class Run:
    """One predictions file, one record per study (the scored line), with its card and image control."""

    name: str
    predictions: Path
    studies: dict[str, dict]  # study id -> first record (file order)
    images: dict[str, list[str]]  # study id -> image names of all its lines (one line per view or not)
    extra_lines: dict[str, int]  # study id -> lines of the study that are not scored
    card: dict | None = None
    control_condition: str | None = None
    control: dict[str, dict] | None = None  # study id -> first record of the image-control run


def _predictions_file(path: Path) -> Path:
    if path.is_dir():
        path = path / "predictions.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a results folder holding predictions.jsonl)")
    return path


def _by_study(path: Path) -> tuple[dict[str, dict], dict[str, list[str]], dict[str, int]]:
    first: dict[str, dict] = {}
    images: dict[str, list[str]] = {}
    extra: dict[str, int] = {}
    for record in read_predictions(path):
        study = _study_id(record)
        names = record.get("images") if isinstance(record.get("images"), list) else []
        images.setdefault(study, [])
        images[study].extend(n for n in names if isinstance(n, str) and n not in images[study])
        if study in first:
            extra[study] = extra.get(study, 0) + 1
        else:
            first[study] = record
    return first, images, extra


def load_run(path: str | os.PathLike, name: str | None = None) -> Run:
    """A results folder (or predictions file), its scores.json when present, and the image-control
    predictions that scores.json names (looked up beside the predictions when moved)."""
    predictions = _predictions_file(Path(path))
    studies, images, extra = _by_study(predictions)
    # The eval run writes scores.json beside predictions.jsonl, eval/score.py predictions.scores.json:
    # either is this run's card (the eval run's first).
    named = (scores_path(predictions), predictions.with_suffix(".scores.json"))
    scores = next((p for p in named if p.is_file()), named[0])
    card = read_json_object(scores) if scores.exists() else None
    if card is None:
        _say(f"warning: {scores}: not found; the page shows no scores card for this run")
    run = Run(
        name=name or predictions.parent.name or predictions.stem,
        predictions=predictions,
        studies=studies,
        images=images,
        extra_lines=extra,
        card=card,
    )
    control = (card or {}).get("image_control")
    if isinstance(control, dict) and control.get("predictions"):
        written = Path(control["predictions"])
        found = next((p for p in (written, predictions.parent / written.name) if p.is_file()), None)
        if found is None:
            _say(f"warning: {scores}: image-control predictions {written} not found; not shown")
        else:
            run.control_condition = str(control.get("condition") or "control")
            run.control = _by_study(found)[0]
    return run


def _references(record: dict) -> list[str]:
    refs = record["reference"]
    return [refs] if isinstance(refs, str) else list(refs)


def indication_from_prompt(prompt: str | None) -> str | None:
    """The indication the clean protocol appends to its question (rrg.model.prompts.report_question)."""
    prefix = REPORT_QUESTION + " Indication: "
    if isinstance(prompt, str) and prompt.startswith(prefix):
        return prompt[len(prefix) :].strip() or None
    return None


# ---------------------------------------------------------------------------------------------------
# Cases


def _text(words: Words, hits: list[int] | None = None) -> dict:
    out = {"text": words.text, "marks": [list(m) for m in words.marks]}
    if hits is not None:
        out["hits"] = hits
    return out


def _prediction(record: dict, reference: Words, scores: dict[str, float]) -> dict:
    words = report_words(record["prediction"])
    hits, ref_hits = overlap(words, reference)
    return {**_text(words, hits), "ref_hits": ref_hits, "scores": scores}


def build_cases(
    runs: Sequence[Run],
    *,
    entries: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """One JSON-ready case per study of the first run, in its file order; later runs are matched by
    study id (a study they lack is shown without their prediction, counted and reported).

    entries: the split file, for indications and view names. image_dir: where the images are
    (rrg.data.entries.resolve_image layouts); images not found are counted and reported, and get path None.
    """
    if not runs:
        raise InputError("no runs to show")
    primary = runs[0]
    by_image: dict[str, dict] = {}
    indications: dict[str, str | None] = {}
    if entries is not None:
        for entry in load_entries(entries):
            indications.setdefault(entry.study_id, entry.indication)
            for k, name in enumerate(entry.images):
                by_image[name] = {"view": entry.views[k] if k < len(entry.views) else None}

    ids = list(primary.studies)
    references = [_references(primary.studies[s]) for s in ids]
    scores: list[list[dict | None]] = []
    control_scores: list[list[dict | None]] = []
    for run in runs:
        present = [s for s in ids if s in run.studies]
        missing = len(ids) - len(present)
        if missing:
            _say(f"warning: run {run.name!r} has no prediction for {missing} of {len(ids)} studies")
        unused = len(set(run.studies) - set(ids))
        if unused:
            _say(f"warning: run {run.name!r}: {unused} studies not in run {primary.name!r} are not shown")
        differ = sum(_references(run.studies[s]) != _references(primary.studies[s]) for s in present)
        if differ:
            _say(
                f"warning: run {run.name!r}: {differ} studies have another reference than in {primary.name!r}"
            )
        scores.append(_scores_for(run.studies, ids, references))
        control_scores.append(_scores_for(run.control, ids, references) if run.control else [None] * len(ids))

    missing_images: list[str] = []
    cases = []
    for k, study in enumerate(ids):
        record = primary.studies[study]
        reference = report_words(references[k][0])
        images = []
        for name in primary.images.get(study, []):
            path = None
            if image_dir is not None:
                try:  # a name pointing outside image_dir is an InputError naming the line, not "missing"
                    path = str(resolve_image(image_dir, name, record.get("_where") or f"study {study}"))
                except ImageNotFound:
                    missing_images.append(name)
            images.append({"name": name, "view": by_image.get(name, {}).get("view"), "path": path})
        case_runs = []
        for r, run in enumerate(runs):
            if study not in run.studies:
                case_runs.append(None)
                continue
            shown = _prediction(run.studies[study], reference, scores[r][k])
            shown["extra_lines"] = run.extra_lines.get(study, 0)
            if run.control and study in run.control:
                shown["control"] = {
                    "condition": run.control_condition,
                    **_prediction(run.control[study], reference, control_scores[r][k]),
                }
            case_runs.append(shown)
        indication = indications.get(study) if entries is not None else None
        cases.append(
            {
                "id": study,
                "indication": indication or indication_from_prompt(record.get("prompt")),
                "images": images,
                "reference": _text(reference),
                "runs": case_runs,
            }
        )
    if missing_images:
        _say(
            f"warning: {len(missing_images)} image(s) not found under {image_dir} "
            f"(first: {missing_images[0]}); shown as missing"
        )
    return cases


def _scores_for(studies: dict[str, dict] | None, ids: list[str], references: list[list[str]]) -> list:
    """Per-study scores of the studies a run has, against the first run's references, by position."""
    if not studies:
        return [None] * len(ids)
    have = [k for k, s in enumerate(ids) if s in studies]
    computed = study_scores([studies[ids[k]]["prediction"] for k in have], [references[k] for k in have])
    out: list = [None] * len(ids)
    for k, value in zip(have, computed):
        out[k] = value
    return out
