"""Per-region reports: each sentence of a findings text assigned to lung, heart, mediastinal, bone or
others (WangLab-OA's regions), offline.

The classifier is a one-vs-rest logistic regression on TF-IDF word uni- and bigrams, fitted by
scripts/validate_regions.py on the GPT-4o region splits of the R2Gen train studies and stored as
plain JSON (rrg/data/region_model.json: vocabulary, idf, weights; nothing unpickled). A sentence gets every
region whose probability passes 0.5, and always its best one, best first. A sentence naming two
regions ("Cardiomediastinal silhouette is normal") is therefore copied whole into each region it
names: GPT-4o rewrote such sentences into one piece per region, a rewrite we do not attempt.

    from rrg.data.regions import load_classifier, split_regions, format_regions
    regions = split_regions("Heart size normal. Lungs are clear.", load_classifier())
    format_regions(regions)  # "Lung: Lungs are clear.\\nHeart: Heart size normal.\\nMediastinal: ..."

Region-structured text is one line per region, "Lung: ...", in REGIONS order; an empty region is
written as "Lung: " with nothing after it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer

from rrg.io import InputError, atomic_write_json, read_json_object

REGIONS = ("lung", "heart", "mediastinal", "bone", "others")
MODEL_PATH = Path(__file__).with_name("region_model.json")
THRESHOLD = 0.5
# Fitted settings (chosen on val among C 3/10/30, min_df 1/2, with or without character n-grams:
# all within 0.005 of each other; the smallest model was kept).
C, MIN_DF, NGRAMS = 3.0, 2, (1, 2)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LINE = re.compile(r"^\s*(lung|heart|mediastinal|bone|others)\s*:(.*)$", re.IGNORECASE)


def split_sentences(text: str | None) -> list[str]:
    """Sentences of a report text, split after . ! ? followed by space (IU X-Ray's punctuation)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip())] if text and text.strip() else []


def normalise(sentence: str) -> str:
    """Lower case, letters only, the anonymisation token XXXX dropped: what the features see."""
    text = re.sub(r"xxxx|[^a-z ]", " ", sentence.lower())
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class RegionClassifier:
    vectorizer: TfidfVectorizer
    coef: np.ndarray  # (len(REGIONS), n_features)
    intercept: np.ndarray  # (len(REGIONS),)

    def probabilities(self, sentences: Sequence[str]) -> np.ndarray:
        x = self.vectorizer.transform([normalise(s) for s in sentences])
        return 1.0 / (1.0 + np.exp(-(x @ self.coef.T + self.intercept)))

    def regions_of(self, sentences: Sequence[str]) -> list[tuple[str, ...]]:
        """Each sentence's regions, best first: those past THRESHOLD, and always the best one."""
        if not sentences:
            return []
        out = []
        for row in self.probabilities(sentences):
            order = np.argsort(-row, kind="stable")
            out.append(tuple(REGIONS[i] for i in order if i == order[0] or row[i] > THRESHOLD))
        return out

    def to_json(self) -> dict:
        vocabulary = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        return {
            "regions": list(REGIONS),
            "settings": {"C": C, "min_df": MIN_DF, "ngram_range": list(NGRAMS), "threshold": THRESHOLD},
            "vocabulary": vocabulary,
            "idf": [round(float(v), 6) for v in self.vectorizer.idf_],
            "coef": [[round(float(v), 6) for v in row] for row in self.coef],
            "intercept": [round(float(v), 6) for v in self.intercept],
        }

    @classmethod
    def from_json(cls, record: dict, where: str) -> RegionClassifier:
        try:
            if tuple(record["regions"]) != REGIONS:
                raise InputError(f"{where}: regions {record['regions']} are not {list(REGIONS)}")
            vocabulary = {word: i for i, word in enumerate(record["vocabulary"])}
            coef = np.asarray(record["coef"], dtype=np.float64)
            idf = np.asarray(record["idf"], dtype=np.float64)
            intercept = np.asarray(record["intercept"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"{where}: not a region model ({error})") from None
        if coef.shape != (len(REGIONS), len(vocabulary)) or idf.shape != (len(vocabulary),):
            raise InputError(f"{where}: weights do not match the vocabulary of {len(vocabulary)} terms")
        vectorizer = _vectorizer(vocabulary)
        vectorizer.idf_ = idf
        return cls(vectorizer, coef, intercept)


def _vectorizer(vocabulary: dict | None = None) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=NGRAMS, sublinear_tf=True, min_df=MIN_DF, vocabulary=vocabulary)


def fit(sentences: Sequence[str], labels: Sequence[Iterable[str]]) -> RegionClassifier:
    """Fit the classifier on sentences and their region sets (multi-label)."""
    binarizer = MultiLabelBinarizer(classes=list(REGIONS))
    y = binarizer.fit_transform([set(x) for x in labels])
    vectorizer = _vectorizer()
    x = vectorizer.fit_transform([normalise(s) for s in sentences])
    model = OneVsRestClassifier(LogisticRegression(C=C, max_iter=3000)).fit(x, y)
    coef = np.vstack([e.coef_[0] for e in model.estimators_])
    intercept = np.array([e.intercept_[0] for e in model.estimators_])
    return RegionClassifier(vectorizer, coef, intercept)


def save_classifier(classifier: RegionClassifier, path: str | os.PathLike = MODEL_PATH) -> None:
    atomic_write_json(path, classifier.to_json())


@lru_cache(maxsize=4)
def load_classifier(path: str | os.PathLike = MODEL_PATH) -> RegionClassifier:
    return RegionClassifier.from_json(read_json_object(path), str(path))


# ---------------------------------------------------------------- region-structured text


def split_regions(text: str | None, classifier: RegionClassifier) -> dict[str, str]:
    """A free-text findings text as {region: its sentences}; a two-region sentence goes into both."""
    sentences = split_sentences(text)
    pieces: dict[str, list[str]] = {r: [] for r in REGIONS}
    for sentence, regions in zip(sentences, classifier.regions_of(sentences), strict=True):
        for region in regions:
            pieces[region].append(sentence)
    return {r: " ".join(v) for r, v in pieces.items()}


def format_regions(regions: dict[str, str]) -> str:
    """ "Lung: ...\\nHeart: ...\\nMediastinal: ...\\nBone: ...\\nOthers: ...": the structured target."""
    return "\n".join(f"{r.capitalize()}: {regions.get(r, '').strip()}".rstrip() for r in REGIONS)


def format_region_response(regions: dict[str, str], impression: str | None) -> str:
    """The region-structured target: the region lines, then "Impression: ..."."""
    return f"{format_regions(regions)}\nImpression: {(impression or '').strip()}".rstrip()


def parse_regions(text: str | None) -> dict[str, str] | None:
    """The regions of a region-structured text, or None when it has no "Region:" line (free text).

    Lines that follow a region line without a label of their own continue it; text before the first
    region line is dropped (a model's preamble).
    """
    if not text:
        return None
    regions: dict[str, list[str]] = {r: [] for r in REGIONS}
    current = None
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            current = match.group(1).lower()
            line = match.group(2)
        if current is not None and line.strip():
            regions[current].append(line.strip())
    if current is None:
        return None
    return {r: " ".join(v) for r, v in regions.items()}


def regions_of_text(text: str | None, classifier: RegionClassifier) -> tuple[dict[str, str], bool]:
    """{region: text} of a prediction or reference: parsed when structured, else classified.

    The flag says whether the text was region-structured.
    """
    parsed = parse_regions(text)
    if parsed is not None:
        return parsed, True
    return split_regions(text, classifier), False


# ---------------------------------------------------------------- WangLab's region file


def read_region_file(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """WangLab's format, {split: [{"id", "report": {region: text}}]}, as id -> {region: text}."""
    groups = read_json_object(path).values()
    out: dict[str, dict[str, str]] = {}
    for group in groups:
        if not isinstance(group, list):
            raise InputError(f"{path}: expected lists of {{'id', 'report'}} objects")
        for k, item in enumerate(group):
            where = f"{path}: entry {k}"
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise InputError(f"{where}: missing string field 'id'")
            report = item.get("report")
            if not isinstance(report, dict) or not set(report) <= set(REGIONS):
                raise InputError(f"{where}: 'report' must be an object with keys among {list(REGIONS)}")
            if not all(isinstance(v, str) for v in report.values()):
                raise InputError(f"{where}: region texts must be strings")
            out[item["id"]] = {r: report.get(r, "") for r in REGIONS}
    return out


def gold_sentences(
    regions: dict[str, str], report: str, min_overlap: float = 0.5
) -> list[tuple[str, frozenset[str]]]:
    """The report's own sentences, each with the regions of the GPT-4o sentences drawn from it.

    GPT-4o reworded and split sentences, so each of its sentences is matched to the report sentence
    holding the largest share of its content words (at least min_overlap); a report sentence split
    into two regions gets both. A report sentence that no GPT-4o sentence matches gets an empty set
    (technique lines such as "2 images." that GPT-4o left out).
    """
    sentences = split_sentences(report)
    words = [_content(s) for s in sentences]
    gold: list[set[str]] = [set() for _ in sentences]
    for region, text in regions.items():
        for piece in split_sentences(text):
            content = _content(piece)
            if not content or not sentences:
                continue
            shares = [len(content & w) / len(content) for w in words]
            best = int(np.argmax(shares))
            if shares[best] >= min_overlap:
                gold[best].add(region)
    return [(s, frozenset(g)) for s, g in zip(sentences, gold, strict=True)]


_STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "is",
        "are",
        "of",
        "and",
        "or",
        "there",
        "no",
        "in",
        "to",
        "with",
        "be",
        "seen",
        "noted",
    ]
)


def gold_units(
    regions: dict[str, dict[str, str]], reports: dict[str, str], split: list[dict]
) -> tuple[list, int]:
    """The (sentence, gold regions) of every study in split, and how many sentences had no region."""
    units, unassigned = [], 0
    for item in split:
        sid = item["id"]
        if sid not in reports:
            raise InputError(f"region file: id {sid!r} is not in the R2Gen annotation")
        for sentence, gold in gold_sentences(regions[sid], reports[sid]):
            if gold:
                units.append((sentence, gold))
            else:
                unassigned += 1
    return units, unassigned


def _content(sentence: str) -> set[str]:
    return set(normalise(sentence).split()) - _STOP
