"""Every scorer's input is bounded before any work starts, and the card counts the texts cut."""

import pytest

import rrg.score.card
import rrg.score.clinical.f1
import rrg.score.ngram
from rrg.score.card import SCORER_MAX_CHARS, SCORER_MAX_WORDS, bound_text, score_records

BIG = "Findings: " + "effusion " * 300_000 + "Impression: normal."  # 2.7 MB, over spaCy's limit


def test_bound_text_cuts_words_and_characters_keeping_spacing():
    assert bound_text("a  b\nc") == "a  b\nc"
    words = " ".join(["effusion"] * (SCORER_MAX_WORDS + 10))
    assert bound_text(words).split() == ["effusion"] * SCORER_MAX_WORDS
    one_line = "x" * (50 * SCORER_MAX_CHARS)  # one "word" a megabyte long
    assert bound_text(one_line) == "x" * SCORER_MAX_CHARS


@pytest.mark.slow
def test_scorers_and_labeler_see_only_bounded_texts(monkeypatch):
    seen: list[str] = []

    class Stub:
        def point(self, meteor):
            return dict.fromkeys(rrg.score.ngram.METRICS, 0.0)

    def build(hyps, refs, meteor):
        seen.extend(hyps)
        seen.extend(r for group in refs for r in group)
        return Stub()

    def clinical_scores(predictions, references, **kwargs):
        seen.extend(predictions)
        seen.extend(references)
        return {}

    monkeypatch.setattr(rrg.score.card.SectionScorer, "build", staticmethod(build))
    monkeypatch.setattr(rrg.score.clinical.f1, "clinical_scores", clinical_scores)
    records = [
        {"id": "1", "prediction": BIG, "reference": "Findings: no effusion. Impression: normal."},
        {"id": "2", "prediction": "no effusion", "reference": ["no effusion", BIG]},
    ]
    card = score_records(records, meteor=object(), labeler="offline", normalize=False)
    assert seen and max(len(t) for t in seen) <= SCORER_MAX_CHARS
    assert max(len(t.split()) for t in seen) <= SCORER_MAX_WORDS
    assert card["counts"]["texts_cut"] == {"prediction": 1, "reference": 1}
    assert any("texts_cut" in note for note in card["notes"])
    assert records[0]["prediction"] is BIG  # the caller's records are left as they were
