"""R2Gen-compatible scoring (`eval/score.py --r2gen_compat`): the texts R2Gen's own evaluation scores.

R2Gen (cuhksz-nlp/R2Gen; R2GenCMN and the papers that reuse its code do the same) never scores the
reference report as written. From its code:

- modules/tokenizers.py: a report is cleaned by `clean_report_iu_xray` and split on spaces; the vocabulary
  is every token seen at least `--threshold 3` times in the train split's reports (counted over all
  their tokens, one report per study), plus `<unk>`; any other token becomes `<unk>`. Ids are
  `[0] + ids + [0]` (0 is both BOS and EOS).
- modules/datasets.py: those ids are cut to `--max_seq_length 60`, BOS included.
- modules/trainer.py: the ground truth is `decode(ids[1:])`, which stops at the first 0. So a reference
  keeps at most 59 tokens (60 minus BOS; a cut report also loses its EOS).
- models/r2gen.py + att_model.py: the model writes at most max_seq_length = 60 tokens, all from that
  vocabulary.
- modules/metrics.py: BLEU-1..4, METEOR and ROUGE-L with pycocoevalcap, no CIDEr.

This module applies the same transformation to text. References: cleaned, tokens outside the vocabulary
replaced by `<unk>`, the first 59 kept. Predictions go through the same vocabulary and are cut at 60
tokens, because a model with R2Gen's tokenizer can write nothing else: where it means a rare word it
writes `<unk>`, and that `<unk>` matches the reference's `<unk>` (the metric gives credit for any rare
word against any other). Leaving our predictions' rare words as they are would score a model that
writes the right rare word below one that writes `<unk>`.

R2Gen's vocabulary came from its annotation.json's `report` field (findings only, already cleaned).
Here it comes from the train split file given (`--train_json`): the same text that is scored (findings
and impression), so the vocabulary a model trained on that split would have. R2Gen's annotation.json
is accepted too, for R2Gen's exact vocabulary.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rrg.data.entries import load_entries
from rrg.data.sections import Sections, parse_sections
from rrg.io import InputError
from rrg.score.card import RAW_TEXT_NOTE
from rrg.score.ngram import normalize_report

MAX_SEQ_LENGTH = 60  # R2Gen's --max_seq_length for IU X-Ray (run_iu_xray.sh)
THRESHOLD = 3  # R2Gen's --threshold
UNK = "<unk>"


def r2gen_tokens(text: str) -> list[str]:
    """R2Gen's tokens of a report: the body without Findings/Impression headings, through
    clean_report_iu_xray (rrg.score.ngram.normalize_report is that function), split on spaces."""
    return normalize_report(parse_sections(text).body).split()


def train_reports(path: str | os.PathLike) -> list[str]:
    """The train reports the vocabulary counts, one per study.

    A split file (any format rrg.data.entries reads) gives each study's first entry's response: the reference
    protocol has one entry per image, and counting both would double every word. R2Gen's annotation.json
    (an object with a "train" list of {"report"}) gives its train reports, R2Gen's exact vocabulary.
    """
    path = Path(path)
    annotation = _r2gen_annotation(path)
    if annotation is not None:
        train = annotation.get("train")
        if not isinstance(train, list) or not all(isinstance(x, dict) and "report" in x for x in train):
            raise InputError(f"{path}: field 'train' must be R2Gen's list of {{'id', 'report', ...}}")
        return [str(x["report"]) for x in train]
    reports: dict[str, str] = {}
    for entry in load_entries(path):
        reports.setdefault(entry.study_id, entry.response)
    if not reports:
        raise InputError(f"{path}: no train reports to build the vocabulary from")
    return list(reports.values())


def _r2gen_annotation(path: Path) -> dict | None:
    """The file as R2Gen's annotation.json (one object with a "train" field), or None for a split file."""
    if not path.is_file():
        return None  # load_entries says "file not found"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # JSONL, or broken: load_entries reads it or names the line
    return data if isinstance(data, dict) and "train" in data else None


@dataclass(frozen=True)
class R2GenVocabulary:
    words: frozenset[str]  # tokens seen >= threshold times; <unk> stands for every other
    threshold: int = THRESHOLD
    reports: int = 0
    source: str = ""

    @classmethod
    def from_reports(
        cls, reports: Iterable[str], threshold: int = THRESHOLD, source: str = ""
    ) -> R2GenVocabulary:
        reports = list(reports)
        counter = Counter(token for report in reports for token in r2gen_tokens(report))
        words = frozenset(token for token, count in counter.items() if count >= threshold)
        return cls(words=words, threshold=threshold, reports=len(reports), source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike, threshold: int = THRESHOLD) -> R2GenVocabulary:
        return cls.from_reports(train_reports(path), threshold, source=str(path))

    def __len__(self) -> int:
        return len(self.words) + 1  # + <unk>, as R2Gen's get_vocab_size

    def encode(self, tokens: list[str]) -> list[str]:
        return [token if token in self.words else UNK for token in tokens]


@dataclass
class CompatCounts:
    references: int = 0
    references_cut: int = 0  # longer than max_seq_length - 1 tokens
    reference_tokens_dropped: int = 0
    reference_unk: int = 0  # tokens replaced by <unk> (in the kept part)
    predictions: int = 0
    predictions_cut: int = 0
    prediction_unk: int = 0


@dataclass
class R2GenCompat:
    vocabulary: R2GenVocabulary
    max_seq_length: int = MAX_SEQ_LENGTH
    counts: CompatCounts = field(default_factory=CompatCounts)

    def reference(self, text: str) -> str:
        """What R2Gen scores as ground truth: decode(ids[:max_seq_length][1:]), ids = [BOS] + tokens + [EOS]."""
        tokens = r2gen_tokens(text)
        kept = self.vocabulary.encode(tokens[: self.max_seq_length - 1])
        self.counts.references += 1
        self.counts.references_cut += len(tokens) > len(kept)
        self.counts.reference_tokens_dropped += len(tokens) - len(kept)
        self.counts.reference_unk += kept.count(UNK)
        return " ".join(kept)

    def prediction(self, text: str) -> str:
        """What a model with R2Gen's tokenizer and max_seq_length could have written for this text."""
        tokens = r2gen_tokens(text)
        kept = self.vocabulary.encode(tokens[: self.max_seq_length])
        self.counts.predictions += 1
        self.counts.predictions_cut += len(tokens) > len(kept)
        self.counts.prediction_unk += kept.count(UNK)
        return " ".join(kept)

    def transform(self, records: list[dict]) -> list[dict]:
        """Records (eval/score.py's lines) with R2Gen's prediction and reference texts; the rest unchanged."""
        out = []
        for record in records:
            refs = record["reference"]
            refs = [self.reference(r) for r in ([refs] if isinstance(refs, str) else refs)]
            out.append({**record, "prediction": self.prediction(record["prediction"]), "reference": refs})
        return out

    def settings(self) -> dict:
        return {
            "train_json": self.vocabulary.source,
            "threshold": self.vocabulary.threshold,
            "max_seq_length": self.max_seq_length,
            "reference_tokens_kept": self.max_seq_length - 1,
            "prediction_tokens_kept": self.max_seq_length,
            "vocabulary_size": len(self.vocabulary),
            "train_reports": self.vocabulary.reports,
        }


def whole_text(text: str, keep_spacing: bool = False) -> Sections:
    """The section parser for R2Gen texts: no headings (they were removed before cleaning), one body
    (R2Gen's texts are single-spaced already: keep_spacing changes nothing).

    parse_sections would read a cut text ending in "... no acute findings" as ending in a heading and
    drop the word; R2Gen scores every token.
    """
    return Sections(findings=None, impression=None, body=" ".join(text.split()))


def annotate_card(card: dict, compat: R2GenCompat) -> dict:
    """Record the setting in the card and drop CIDEr, which R2Gen's evaluation never computes."""
    for scores in card["metrics"].values():
        if isinstance(scores, dict) and "CIDEr" in scores:
            scores["CIDEr"] = None
    for intervals in (card.get("ci95") or {}).values():
        if isinstance(intervals, dict):
            intervals.pop("CIDEr", None)
    # score_records saw text the compat step had already cleaned the R2Gen way, so it did not clean again.
    card["settings"]["normalize"] = True
    card["settings"]["r2gen_compat"] = compat.settings()
    card["counts"]["r2gen_compat"] = vars(compat.counts).copy()
    notes = [n for n in card["notes"] if n != RAW_TEXT_NOTE]
    notes.append(
        f"r2gen_compat: texts as R2Gen's evaluation scores them: clean_report_iu_xray, tokens seen fewer "
        f"than {compat.vocabulary.threshold} times in {compat.vocabulary.source} -> <unk> (references and "
        f"predictions), references cut to {compat.max_seq_length - 1} tokens (max_seq_length "
        f"{compat.max_seq_length} counts BOS), predictions to {compat.max_seq_length}; the whole report is one "
        "text (findings/impression not scored); no CIDEr"
    )
    card["notes"] = notes
    return card
