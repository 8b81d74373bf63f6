"""ReXrank's BLEU-2 (CXR-Report-Metric's per-study fast_bleu BLEU-2), on cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rrg.score.rexrank_bleu import block, per_study, tokens


def test_tokens_as_cxr_report_metric_prepares_them():
    # lower-cased, "." its own token, split on single spaces only (a line break stays in its token)
    assert tokens("No effusion.\nHeart  NORMAL.") == ["no", "effusion", ".\nheart", "normal", "."]


def test_hand_computed_bleu2():
    # hyp [the heart is normal .] (5 tokens) vs ref [the heart size is normal .] (6 tokens):
    # p1 = 5/5, p2 = 3/4 (the heart, is normal, normal .), brevity exp(1 - 6/5)
    expected = math.exp(1 - 6 / 5) * math.sqrt(1.0 * 3 / 4)
    assert per_study(["The heart is normal."], ["The heart size is normal."])[0] == pytest.approx(
        expected, abs=1e-12
    )


def test_smoothing_and_zero_cases():
    # one token: no bigram, whose zero count becomes 0.1 / max(1, 0) (fast_bleu's and NLTK's method 1)
    one = math.exp(1 - 2 / 1) * math.sqrt(1.0 * 0.1)
    scores = per_study(["heart", "lungs clear", ""], ["heart normal", "heart normal", "heart normal"])
    np.testing.assert_allclose(scores, [one, 0.0, 0.0], atol=1e-12)


def test_block_is_the_mean_over_studies_with_an_interval():
    preds, refs = ["heart normal", "lungs clear"], ["heart normal", "heart normal"]
    weights = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    out = block(preds, refs, weights)
    assert out["bleu2"] == pytest.approx(0.5) and out["studies"] == 2
    # the resamples score 1, 0 and 0.5: the 2.5th and 97.5th percentiles of those
    assert out["ci95"] == pytest.approx([0.025, 0.975])


@pytest.mark.slow
def test_card_holds_rexrank_bleu_beside_ours():
    from rrg.score.card import score_records

    records = [
        {"id": "1", "prediction": "The heart is normal.", "reference": "The heart size is normal."},
        {"id": "2", "prediction": "heart", "reference": "heart normal"},
    ]
    card = score_records(records, labeler="none", bootstrap=20)
    expected = (math.exp(1 - 6 / 5) * math.sqrt(3 / 4) + math.exp(-1) * math.sqrt(0.1)) / 2
    assert card["rexrank_bleu"]["bleu2"] == pytest.approx(expected, abs=1e-12)
    assert card["rexrank_bleu"]["bleu2"] != pytest.approx(card["metrics"]["report"]["BLEU-2"])
    assert len(card["rexrank_bleu"]["ci95"]) == 2
