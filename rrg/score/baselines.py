"""Text-only baselines: reports chosen from the train split without looking at any image.

They answer "how much of a score comes from the dataset and the prompt, not the model?":

    constant            the most frequent train report (the normal template), for every test study
    random              a random train report per test study (seeded)
    nearest_indication  the report of the train study whose clinical indication is closest (TF-IDF cosine)
    prompt_oracle       what the prompt gives away: on the reference protocol, whose prompt carries the
                        report's own Problems labels, a report of a train study with the same labels;
                        elsewhere nearest_indication on the whole prompt
    reference_copy      the test reference itself (the upper bound; every metric at its maximum)

A baseline answers per study (every entry of a study gets the same report: the prompt is the same and
the images are not used). Train reports are counted once per study. "Most frequent" compares reports
after R2Gen normalisation (what the scorer sees); ties go to the earliest train study. Every choice a
method makes by rule (ties, fallbacks) is counted in `BaselineResult.counts`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from rrg.data.entries import Entry
from rrg.data.iu_xray import EXCEL_ERROR
from rrg.io import InputError
from rrg.model.prompts import REFERENCE_PROMPT_PREFIX
from rrg.score.ngram import normalize_report

METHODS = ("constant", "random", "nearest_indication", "prompt_oracle", "reference_copy")


@dataclass
class Choice:
    """The report given to one test study, and why."""

    text: str
    source_study: str | None  # the train study whose report it is (None for reference_copy)
    rule: str  # how it was chosen, e.g. "nearest", "tie", "exact_labels", "fallback_constant"


@dataclass
class BaselineResult:
    choices: dict[str, Choice]  # test study id -> its report
    counts: dict[str, int] = field(default_factory=dict)


def first_per_study(entries: Sequence[Entry]) -> list[Entry]:
    """One entry per study, the first in file order (the reference protocol has one per image)."""
    seen: dict[str, Entry] = {}
    for entry in entries:
        seen.setdefault(entry.study_id, entry)
    return list(seen.values())


@cache
def _normalized(text: str) -> str:
    return normalize_report(text)


def report_key(entry: Entry) -> str:
    """What "the same report" means: equal after R2Gen normalisation (cached: ties compare thousands)."""
    return _normalized(entry.response)


def most_frequent(train: Sequence[Entry], candidates: Sequence[int] | None = None) -> int:
    """Index (into train) of the most frequent report among the candidates (all by default); ties go to
    the earliest study. Counter keeps first-seen order for equal counts, so this is deterministic."""
    pool = range(len(train)) if candidates is None else candidates
    keys = {i: report_key(train[i]) for i in pool}
    best = Counter(keys.values()).most_common(1)[0][0]
    return next(i for i in pool if keys[i] == best)


# --------------------------------------------------------------------------- text similarity


def indication_text(entry: Entry) -> str | None:
    """The clinical indication, or None when missing (the Kaggle CSV's Excel error counts as missing)."""
    text = (entry.indication or "").strip()
    return text if text and text != EXCEL_ERROR else None


def nearest_by_text(
    train: Sequence[Entry],
    test: Sequence[Entry],
    text_of: Callable[[Entry], str | None],
    what: str = "indication",
    rule_prefix: str = "",
) -> BaselineResult:
    """For each test study, the train report whose text (indication or prompt) is closest by TF-IDF cosine.

    Train studies without the text are left out of the index. A test study without the text, or sharing
    no word with any train text, gets the constant report; several train studies at the best similarity
    are a tie, broken by the most frequent report among them. Each case is counted.
    """
    counts = Counter()
    indexed = [i for i, e in enumerate(train) if text_of(e)]
    counts["train_studies_without_text"] = len(train) - len(indexed)
    if not indexed:
        raise InputError(
            f"no train entry has its {what} to compare with (the reference paper's {{prompt, input_image, "
            "response}} files carry no indication; data/report2json.py's do)"
        )
    vectorizer = TfidfVectorizer()  # l2-normalised rows: a dot product is the cosine
    train_matrix = vectorizer.fit_transform([text_of(train[i]) for i in indexed])
    constant = most_frequent(train)
    choices = {}
    for entry in test:
        text = text_of(entry)
        if text is None:
            counts["missing_text"] += 1
            choices[entry.study_id] = _choice(train, constant, "fallback_constant_missing")
            continue
        similarity = (train_matrix @ vectorizer.transform([text]).T).toarray().ravel()
        best = similarity.max()
        if best <= 0:
            counts["no_shared_word"] += 1
            choices[entry.study_id] = _choice(train, constant, "fallback_constant_no_overlap")
            continue
        tied = [indexed[j] for j in np.flatnonzero(similarity >= best - 1e-12)]
        rule = "tie" if len(tied) > 1 else "nearest"
        counts[rule] += 1
        choices[entry.study_id] = _choice(train, most_frequent(train, tied), rule)
    return BaselineResult(choices, _with_prefix(counts, rule_prefix))


def _choice(train: Sequence[Entry], index: int, rule: str) -> Choice:
    return Choice(train[index].response, train[index].study_id, rule)


def _with_prefix(counts: Counter, prefix: str) -> dict[str, int]:
    return {f"{prefix}{k}": v for k, v in counts.items()}


# --------------------------------------------------------------------------- the label leak


def has_labels(entry: Entry) -> bool:
    """The reference protocol's prompt: its fixed text, then the study's Problems, then its indication."""
    return entry.prompt.startswith(REFERENCE_PROMPT_PREFIX)


def complaint_pieces(entry: Entry) -> tuple[list[str], bool]:
    """The ";"-separated pieces of a reference prompt's chief complaint, and whether the indication was cut off.

    The prompt glues Problems ("Lung;Diaphragm") to the indication ("COPD.") or to "nan" when it is
    missing. Split files written by data/report2json.py carry the indication, so it is cut off exactly.
    The reference paper's own files carry none: unless the prompt ends in "nan", the last piece then holds
    the last label and the indication glued together (False).
    """
    complaint = entry.prompt[len(REFERENCE_PROMPT_PREFIX) :]
    tail = entry.indication if entry.indication is not None else "nan"
    separable = complaint.endswith(tail)
    if separable:
        complaint = complaint[: len(complaint) - len(tail)]
    return [piece.strip() for piece in complaint.split(";") if piece.strip()], separable


class PromptLabels:
    """Reads the Problems labels of reference prompts (lower case, as a set; order and repeats do not count).

    A last piece with the indication glued on is cut at the longest label seen unglued in any of the
    entries (a piece before the last, or a prompt whose indication was cut off); one that starts with no
    such label stays glued. Both are counted.
    """

    def __init__(self, entries: Sequence[Entry]):
        self.known: set[str] = set()
        for entry in entries:
            pieces, separable = complaint_pieces(entry)
            self.known.update(p.lower() for p in (pieces if separable else pieces[:-1]))
        self.counts: Counter = Counter()

    def __call__(self, entry: Entry) -> frozenset[str]:
        pieces, separable = complaint_pieces(entry)
        pieces = [p.lower() for p in pieces]
        if not separable and pieces:
            last = pieces[-1]
            label = max((k for k in self.known if last.startswith(k)), key=len, default=None)
            if label is None:
                self.counts["labels_with_indication_glued"] += 1
            else:
                self.counts["labels_cut_at_a_known_label"] += 1
                pieces[-1] = label
        return frozenset(pieces)


def label_oracle(train: Sequence[Entry], test: Sequence[Entry]) -> BaselineResult:
    """A train report with the test prompt's exact label set (the most frequent among such studies), else
    the most frequent among those with the largest label overlap (Jaccard), else the constant report."""
    read_labels = PromptLabels([*train, *test])
    train_labels = [read_labels(entry) for entry in train]
    by_labels: dict[frozenset[str], list[int]] = {}
    for i, labels in enumerate(train_labels):
        by_labels.setdefault(labels, []).append(i)
    constant = most_frequent(train)
    counts = Counter()
    choices = {}
    for entry in test:
        labels = read_labels(entry)
        if labels in by_labels:
            rule, index = "exact_labels", most_frequent(train, by_labels[labels])
        else:
            overlap = np.array([len(labels & t) / max(len(labels | t), 1) for t in train_labels])
            if overlap.max() > 0:
                tied = list(np.flatnonzero(overlap >= overlap.max() - 1e-12))
                rule, index = "label_overlap", most_frequent(train, tied)
            else:
                rule, index = "fallback_constant_no_shared_label", constant
        counts[rule] += 1
        choices[entry.study_id] = _choice(train, index, rule)
    return BaselineResult(choices, {**read_labels.counts, **counts})


def prompt_mode(train: Sequence[Entry], test: Sequence[Entry]) -> bool:
    """True when every prompt carries labels (reference protocol), False when none does; mixed is an error."""
    flags = {has_labels(e) for e in [*train, *test]}
    if len(flags) > 1:
        raise InputError(
            "prompt_oracle: some prompts carry the reference protocol's labels and some do not; "
            "train and test must come from the same protocol"
        )
    return flags.pop()


# --------------------------------------------------------------------------- methods


def run_baseline(
    method: str, train_entries: Sequence[Entry], test_entries: Sequence[Entry], seed: int = 0
) -> BaselineResult:
    """The report of each test study (BaselineResult) for one method."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    train = first_per_study(train_entries)
    test = first_per_study(test_entries)
    if not train:
        raise InputError("the train split has no entries")
    if method == "constant":
        index = most_frequent(train)
        share = sum(report_key(e) == report_key(train[index]) for e in train)
        result = BaselineResult(
            {e.study_id: _choice(train, index, "most_frequent") for e in test},
            {"train_studies_with_this_report": share},
        )
    elif method == "random":
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(train), size=len(test))
        result = BaselineResult({e.study_id: _choice(train, int(i), "random") for e, i in zip(test, picks)})
    elif method == "nearest_indication":
        result = nearest_by_text(train, test, indication_text)
    elif method == "prompt_oracle":
        if prompt_mode(train, test):
            result = label_oracle(train, test)
            result.counts["labels_used"] = 1
        else:
            result = nearest_by_text(train, test, lambda e: e.prompt, what="prompt", rule_prefix="prompt_")
            result.counts["labels_used"] = 0
    else:  # reference_copy
        result = BaselineResult({e.study_id: Choice(e.response, None, "reference") for e in test})
    result.counts = {"train_studies": len(train), "test_studies": len(test), **result.counts}
    return result
