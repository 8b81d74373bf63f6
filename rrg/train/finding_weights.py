"""Finding-weighted loss (LLM-RG4's token weighting): the report tokens of sentences that the offline
CheXpert labeler (rrg.score.clinical.labeler) marks positive or uncertain for any observation weigh W, the others 1.

Computed once, on the CPU, when the training set is tokenised (rrg.train.collate.encode_dataset): each
response is split into sentences (rrg.data.regions.split_sentences' rule, on the text as the model learns
it), every sentence is labelled on its own, and each response token gets the weight of the sentence
its first character falls in (the tokenizer's offsets). `</s>` weighs 1.

How the loss keeps its scale: the loss of an accumulation group is sum(w * CE) / sum(w) over its
supervised tokens, all micro-batches and ranks together (rrg.train.step.accumulate_gradients divides by
the group's weight sum where it divided by the token count), i.e. the weights renormalised to mean 1
over the group's supervised tokens. With W = 1 every weight is 1 and this is the token-mean loss.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rrg.score.clinical.labeler import NEGATIVE, OBSERVATIONS, label_reports

NO_FINDING = OBSERVATIONS[0]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of text (the separating spaces belong to none)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def finding_sentences(sentences: Sequence[str]) -> list[bool]:
    """Whether each sentence, labelled on its own, has a positive or uncertain observation ("No Finding",
    which CheXpert sets positive for a sentence with nothing abnormal, is not a finding)."""
    labels = label_reports(list(sentences))
    return [any(v is not None and v != NEGATIVE for k, v in row.items() if k != NO_FINDING) for row in labels]


def response_weights(
    texts: Sequence[str], offsets: Sequence[Sequence[tuple[int, int]]], weight: float
) -> list[list[float]]:
    """Per-token weights of each response (offsets: the tokenizer's character span of each token)."""
    spans = [sentence_spans(t) for t in texts]
    flags = finding_sentences([t[a:b] for t, s in zip(texts, spans, strict=True) for a, b in s])
    out, k = [], 0
    for text_spans, token_spans in zip(spans, offsets, strict=True):
        heavy = flags[k : k + len(text_spans)]
        k += len(text_spans)
        weights = []
        for start, _ in token_spans:
            # A token's first character decides; a leading space (SentencePiece's "▁") goes to the next sentence.
            sentence = next((i for i, (a, b) in enumerate(text_spans) if start < b), len(text_spans) - 1)
            weights.append(weight if text_spans and heavy[sentence] else 1.0)
        out.append(weights)
    return out
