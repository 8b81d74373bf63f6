"""An offline CheXpert-14 labeler: each report's 14 CheXpert observations as positive, negative,
uncertain or not mentioned (None), for the whole report and for its Findings and Impression sections.

It follows the CheXpert labeler (Irvin et al., AAAI 2019; stanfordmlgroup/chexpert-labeler) stage by
stage, on the CheXpert labeler's own text cleaning:
1. mention extraction: the phrases of rrg.score.clinical.lexicon (its lists, word-bounded, with IU X-Ray
   phrasing) found in the cleaned text, minus those overlapping an "unmention" phrase;
2. classification: a mention is uncertain if a pre-negation uncertainty cue covers it ("cannot
   exclude", "no new"), else negative if a negation cue does ("no", "without", "... is normal"), else
   uncertain if an uncertainty cue does ("may represent", "possible", "X or Y"), else positive;
3. aggregation per observation: positive beats uncertain beats negative, except that negative and
   uncertain together give uncertain (its Aggregator); a positive or uncertain "chf"/"heart failure"
   adds an uncertain Cardiomegaly; No Finding is positive when no mention other than a support
   device is positive or uncertain (mentions of findings outside the 13, such as emphysema, granuloma
   or degenerative change, count), and otherwise not mentioned: CheXpert never labels it negative.
The one deliberate departure (anatomy mentions such as "heart size" need a cue to count) is explained
in rrg.score.clinical.lexicon.

Library: spaCy's blank English pipeline (rule-based tokenizer and sentencizer; no trained model, no
download, nothing unpickled) with negspacy's NegEx component for the context of each mention. NegEx
scopes a cue to its sentence up to a termination phrase, after the cue for preceding cues and before it
for following ones, and drops cues inside pseudo-cue phrases; negspacy lets each instance carry its own
termset and write its own span attribute, so one instance per CheXpert rule class (pre-negation
uncertainty, negation, post-negation uncertainty, and the enlargement cue of anatomy mentions) runs on
the same mention spans. medspaCy's ConText would give negation and uncertainty in one component, but
medspaCy 1.3 pins spaCy < 3.8, whose thinc needs numpy < 2: installing it would downgrade this
project's numpy 2 stack, so it was not used. negspacy 1.1 needs only spaCy >= 3.8.

    from rrg.score.clinical.labeler import label_reports
    label_reports(["No pleural effusion. May represent atelectasis."])
    # [{"No Finding": None, ..., "Atelectasis": "uncertain", ..., "Pleural Effusion": "negative", ...}]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span
from tqdm import tqdm

from rrg.data.sections import parse_sections
from rrg.score.clinical import lexicon as lex

OBSERVATIONS = lex.OBSERVATIONS
POSITIVE, NEGATIVE, UNCERTAIN = "positive", "negative", "uncertain"
LABELS = (POSITIVE, NEGATIVE, UNCERTAIN)  # and None: not mentioned
SECTION_NAMES = ("report", "findings", "impression")

SPAN_KEY = "chexpert_mentions"
# (negspacy component name, span attribute it sets, termset), in the order they run.
CONTEXTS = (
    ("pre_negation_uncertainty", "pre_uncertain", lex.PRE_NEGATION_UNCERTAINTY),
    ("negation", "negated", lex.NEGATION),
    ("uncertainty", "uncertain", lex.UNCERTAINTY),
    ("enlargement", "enlarged", lex.ENLARGEMENT),
)

Labels = dict[str, str | None]


@dataclass(frozen=True)
class Mention:
    observation: str  # one of OBSERVATIONS[1:] or lex.OTHER_FINDING
    text: str
    label: str  # POSITIVE, NEGATIVE or UNCERTAIN
    sentence: str


# --------------------------------------------------------------------------------------------------
# Text cleaning and mention patterns


_AND_OR = re.compile(r"and/or")
_SLASH = re.compile(r"(?<=[a-zA-Z])/(?=[a-zA-Z])")
_SPACE_AFTER = str.maketrans({".": ". ", ",": ", "})
_EMPTY_SENTENCE = re.compile(r"\.\s+\.")


def clean_text(text: str) -> str:
    """The CheXpert labeler's Loader.clean: lower case, "and/or" -> "or", "a/b" -> "a or b", ".." ->
    ".", a space after every "." and ",", runs of whitespace -> one space, empty sentences dropped."""
    text = _SLASH.sub(" or ", _AND_OR.sub("or", text.lower())).replace("..", ".")
    text = " ".join(text.translate(_SPACE_AFTER).split())
    return _EMPTY_SENTENCE.sub(".", text)


def _union(patterns: Iterable[str]) -> re.Pattern | None:
    patterns = list(patterns)
    if not patterns:
        return None
    # A mention starts and ends at a word edge; a hyphen joins words ("plate-like" is not a plate).
    return re.compile(r"(?<![\w-])(?:" + "|".join(patterns) + r")(?![\w-])")


@dataclass(frozen=True)
class _Patterns:
    observation: str
    finding: re.Pattern | None
    anatomy: re.Pattern | None
    unmention: re.Pattern | None


@lru_cache(maxsize=1)
def _patterns() -> tuple[_Patterns, ...]:
    out = []
    for observation, patterns in lex.MENTIONS.items():
        out.append(
            _Patterns(
                observation,
                _union(p for p in patterns if p not in lex.ANATOMY_MENTIONS),
                _union(p for p in patterns if p in lex.ANATOMY_MENTIONS),
                _union(lex.UNMENTIONS.get(observation, [])),
            )
        )
    return tuple(out)


def find_mentions(doc: Doc) -> list[Span]:
    """Mention spans of doc (lower-cased, cleaned text), labelled with their observation; anatomy
    mentions have span.id_ == "anatomy"."""
    text = doc.text
    spans = []
    for p in _patterns():
        blocked = [m.span() for m in p.unmention.finditer(text)] if p.unmention else []
        for regex, kind in ((p.finding, ""), (p.anatomy, "anatomy")):
            if regex is None:
                continue
            for match in regex.finditer(text):
                start, end = match.span()
                if any(start < b_end and end > b_start for b_start, b_end in blocked):
                    continue
                span = doc.char_span(start, end, label=p.observation, alignment_mode="expand", span_id=kind)
                if span is not None:
                    spans.append(span)
    return spans


@Language.component("chexpert_mentions")
def _mentions_component(doc: Doc) -> Doc:
    doc.spans[SPAN_KEY] = find_mentions(doc)
    return doc


@lru_cache(maxsize=1)
def build_pipeline() -> Language:
    """spaCy's blank English pipeline: sentencizer, mention finder, then one negspacy NegEx component
    per context class (CONTEXTS). Built once per process."""
    import negspacy.negation  # noqa: F401  (registers the "negex" factory)

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("chexpert_mentions")
    for name, attribute, terms in CONTEXTS:
        nlp.add_pipe(
            "negex",
            name=name,
            config={"neg_termset": terms, "extension_name": attribute, "span_keys": [SPAN_KEY]},
        )
    return nlp


# --------------------------------------------------------------------------------------------------
# Classification and aggregation


def classify(span: Span) -> str | None:
    """One mention's label (CheXpert's rule order); None for an anatomy mention without a cue."""
    if span._.pre_uncertain:
        return UNCERTAIN
    if span._.negated:
        return NEGATIVE
    if span._.uncertain:
        return UNCERTAIN
    if span.id_ == "anatomy" and not span._.enlarged:
        return None
    return POSITIVE


def mentions(doc: Doc) -> list[Mention]:
    out = []
    for span in sorted(doc.spans[SPAN_KEY], key=lambda s: (s.start, s.end)):
        label = classify(span)
        if label is not None:
            out.append(Mention(span.label_, span.text, label, span.sent.text))
    return out


def _combine(labels: list[str]) -> str:
    """CheXpert's Aggregator.dict_to_vec for one observation's mention labels."""
    if POSITIVE in labels:
        return POSITIVE
    if UNCERTAIN in labels:
        return UNCERTAIN  # uncertain alone, or negative and uncertain together
    return NEGATIVE


def aggregate(found: Sequence[Mention]) -> Labels:
    """The 14 labels of one text from its mentions (see the module docstring, step 3)."""
    by_observation: dict[str, list[str]] = {}
    no_finding = True
    for mention in found:
        if mention.observation != lex.SUPPORT_DEVICES and mention.label in (POSITIVE, UNCERTAIN):
            no_finding = False
        if mention.observation == lex.OTHER_FINDING:
            continue
        by_observation.setdefault(mention.observation, []).append(mention.label)
        # CheXpert: heart failure suggests, but does not state, an enlarged heart.
        if mention.text in ("chf", "heart failure") and mention.label != NEGATIVE:
            by_observation.setdefault("Cardiomegaly", []).append(UNCERTAIN)
    labels: Labels = {o: _combine(by_observation[o]) if o in by_observation else None for o in OBSERVATIONS}
    labels[lex.NO_FINDING] = POSITIVE if no_finding else None
    return labels


# --------------------------------------------------------------------------------------------------
# Batch API


def _docs(texts: Sequence[str], progress: bool) -> Iterable[Doc]:
    nlp = build_pipeline()
    cleaned = (clean_text(t or "") for t in texts)
    docs = nlp.pipe(cleaned, batch_size=256)
    return tqdm(docs, total=len(texts), desc="labelling", unit="text", disable=not progress or None)


def label_reports(texts: Sequence[str], progress: bool = False) -> list[Labels]:
    """The 14 CheXpert labels of each text: {observation: "positive" | "negative" | "uncertain" | None}.

    Texts are labelled whole (headings such as "Findings:" are harmless); an empty text is "No Finding".
    """
    return [aggregate(mentions(doc)) for doc in _docs(texts, progress)]


def report_mentions(texts: Sequence[str]) -> list[list[Mention]]:
    """Every counted mention of each text, with its label and sentence (to explain a label)."""
    return [mentions(doc) for doc in _docs(texts, False)]


def label_report_sections(texts: Sequence[str], progress: bool = False) -> list[dict[str, Labels | None]]:
    """Per text: {"report": labels of the whole report (rrg.data.sections' body, headings dropped),
    "findings": labels of its Findings section, "impression": of its Impression}; a section the text
    does not have is None."""
    parsed = [parse_sections(t or "") for t in texts]
    flat: list[str] = []
    where: list[tuple[int, str]] = []
    for i, sections in enumerate(parsed):
        for name in SECTION_NAMES:
            body = sections.body if name == "report" else getattr(sections, name)
            if body is not None:
                flat.append(body)
                where.append((i, name))
    out: list[dict[str, Labels | None]] = [dict.fromkeys(SECTION_NAMES) for _ in texts]
    for (i, name), labels in zip(where, label_reports(flat, progress)):
        out[i][name] = labels
    return out
