"""The scorer: published numbers reproduced, section parsing, study dedup, bootstrap, legacy metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rrg.data.sections import parse_sections
from rrg.score.card import SectionScorer, corpus_scores, resample_weights, score_records
from rrg.score.legacy import WORDNET_HINT, WordNetMissingError, legacy_scores, require_wordnet
from rrg.score.meteor import METEOR_MAX_WORDS, MeteorError, MeteorScorer, meteor_text
from rrg.score.ngram import COCO_NAMES, METRICS, normalize_report
from tests.helpers import shared_path

STANDARD = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")


@pytest.fixture(scope="module")
def meteor():
    with MeteorScorer() as scorer:
        yield scorer


def _load(folder: str, *names: str):
    return [json.loads(shared_path("metric_fixtures", folder, n).read_text()) for n in names]


# ---------------------------------------------------------------------------------------------------
# Published numbers


@pytest.mark.slow
def test_reproduces_coco_captionmetrics(meteor):
    gts, res, published = _load("coco_captionmetrics", "gts.json", "res.json", "published_scores.json")
    scores = corpus_scores(gts, res, meteor=meteor)
    for metric in STANDARD:
        assert scores[metric] == pytest.approx(published[COCO_NAMES[metric]], abs=1e-9), metric
    assert scores["METEOR"] == pytest.approx(published["METEOR"], abs=1e-6)


def test_reproduces_iu_xray_fixed_template():
    gts, res, published = _load(
        "iu_xray_fixed_template", "test_refs.json", "test_result.json", "test_summary.json"
    )
    scores = corpus_scores(gts, res, metrics=STANDARD)
    assert set(scores) == set(STANDARD)
    for metric in STANDARD:
        assert scores[metric] == pytest.approx(published[COCO_NAMES[metric]], abs=1e-9), metric


@pytest.mark.slow
def test_raw_scoring_is_byte_exact_and_reproduces_iu_xray_fixed_template(meteor):
    """--no_normalize must hand the texts to the scorers as given: 34 of these references hold double
    spaces, and pycocoevalcap's ROUGE-L splits on single spaces (squashed, ROUGE-L read 0.40053)."""
    gts, res, published = _load(
        "iu_xray_fixed_template", "test_refs.json", "test_result.json", "test_summary.json"
    )
    assert sum("  " in refs[0] for refs in gts.values()) == 34
    records = [{"id": k, "prediction": res[k][0], "reference": gts[k]} for k in gts]
    card = score_records(records, normalize=False, meteor=meteor)
    for metric in STANDARD:
        assert card["metrics"]["report"][metric] == pytest.approx(published[COCO_NAMES[metric]], abs=1e-9), (
            metric
        )
    assert card["settings"]["normalize"] is False
    assert any("exactly as given" in note for note in card["notes"])


@pytest.mark.slow
def test_resampled_statistics_equal_pycocoevalcap_on_the_resampled_corpus(meteor):
    """The bootstrap's fast path (sums of per-sample stats, CIDEr df per resample, METEOR re-aggregated
    in numpy) must equal scoring the resampled corpus (duplicates included) from scratch."""
    gts, res = _load("coco_captionmetrics", "gts.json", "res.json")
    ids = list(gts)[:120]
    scorer = SectionScorer.build([res[i][0] for i in ids], [gts[i] for i in ids], meteor)
    weights = np.vstack([np.ones(len(ids)), resample_weights(len(ids), 2, seed=3)])
    fast = scorer.resampled(weights)
    for b, w in enumerate(weights):
        drawn = np.repeat(np.arange(len(ids)), w.astype(int))
        slow = corpus_scores(
            {k: gts[ids[j]] for k, j in enumerate(drawn)},
            {k: res[ids[j]] for k, j in enumerate(drawn)},
            meteor=meteor,
        )
        for metric in METRICS:
            assert fast[metric][b] == pytest.approx(slow[metric], abs=1e-9), (b, metric)


# ---------------------------------------------------------------------------------------------------
# Text handling


def test_normalize_report_is_r2gen_cleaning():
    text = "1. The heart is normal.. 2. No effusion, no pneumothorax!  Lungs: clear (bilateral)."
    # R2Gen splits sentences on ". " only, so "!" is just removed.
    assert (
        normalize_report(text) == "the heart is normal . no effusion no pneumothorax lungs clear bilateral ."
    )
    assert normalize_report("Heart size normal\nNo edema.") == "heart size normal no edema ."
    assert normalize_report("") == ""
    assert normalize_report(" . ") == ""


@pytest.mark.parametrize(
    ("text", "findings", "impression"),
    [
        (
            "Findings: The heart is normal. Impression: No acute disease.",
            "The heart is normal.",
            "No acute disease.",
        ),
        ("FINDINGS The heart is normal. IMPRESSION: Normal.", "The heart is normal.", "Normal."),
        ("findings - lungs clear\nimpression - normal chest", "lungs clear", "normal chest"),
        ("Impression: Normal.\nFindings: Lungs clear.", "Lungs clear.", "Normal."),
        ("Findings:\nlungs clear\n\nImpression:\nnormal", "lungs clear", "normal"),
        ("Findings: lungs clear, no acute findings.", "lungs clear, no acute findings.", None),
        ("The heart is normal. No acute findings.", None, None),
        ("", None, None),
    ],
)
def test_parse_sections(text, findings, impression):
    sections = parse_sections(text)
    assert (sections.findings, sections.impression) == (findings, impression)


def test_parse_sections_keep_spacing_cuts_only_at_headings():
    text = "Findings:\n the heart  is normal.\n Impression:  no acute  disease. "
    sections = parse_sections(text, keep_spacing=True)
    assert sections.findings == "the heart  is normal."
    assert sections.impression == "no acute  disease."
    assert sections.body == "the heart  is normal. no acute  disease."
    assert parse_sections(" a  b\n", keep_spacing=True).body == " a  b\n"  # no heading: the text itself
    assert parse_sections(text).body == "the heart is normal. no acute disease."


def test_meteor_text_replaces_only_what_the_line_protocol_cannot_carry():
    assert meteor_text("a  b\nc|||d\r\ne ") == "a  b c d  e "
    long = " ".join(["effusion"] * (METEOR_MAX_WORDS + 5))
    assert meteor_text(long) == " ".join(["effusion"] * METEOR_MAX_WORDS)


def test_parse_sections_body_drops_headings_only():
    body = parse_sections("Findings: Heart normal. Impression: No acute disease.").body
    assert body == "Heart normal. No acute disease."


# ---------------------------------------------------------------------------------------------------
# Records -> card

REF_A = "Findings: The heart is normal in size. The lungs are clear. Impression: No acute disease."
REF_B = "Findings: Mild cardiomegaly. Small left pleural effusion. Impression: Cardiomegaly with effusion."
REF_C = "Findings: Lungs are hyperinflated. No focal consolidation. Impression: Emphysema."


def _records():
    return [
        {"id": "1_0", "images": ["CXR1_IM-0001-4001.png"], "prediction": REF_A, "reference": REF_A},
        {"id": "1_1", "images": ["CXR1_IM-0001-3001.png"], "prediction": REF_B, "reference": REF_A},
        {"id": "2", "study_id": "2", "prediction": "Findings: Mild cardiomegaly.", "reference": REF_B},
        {"id": "3", "prediction": "", "reference": REF_C},
    ]


@pytest.mark.slow
def test_card_dedups_studies_and_counts(meteor, capsys):
    card = score_records(_records(), meteor=meteor)
    counts = card["counts"]
    assert counts["lines"] == 4 and counts["studies"] == 3
    assert counts["scored"] == 3 and counts["duplicate_views_dropped"] == 1
    assert counts["empty_predictions"] == 1
    assert counts["missing_impression"] == {"prediction": 2, "reference": 0}
    assert counts["missing_findings"] == {"prediction": 1, "reference": 0}
    assert "dropped 1" in capsys.readouterr().err
    assert set(card["metrics"]) == {"report", "findings", "impression"}
    for section in card["metrics"].values():
        assert set(section) == set(METRICS)
    assert set(card["settings"]) >= {"normalize", "per_image", "bootstrap", "seed", "legacy", "predictions"}
    assert set(card["versions"]) == {"pycocoevalcap", "nltk", "rouge", "java"}
    # Study 1's first line is a perfect copy; the dropped second view would have lowered the scores.
    per_image = score_records(_records(), per_image=True, meteor=meteor)
    assert per_image["counts"]["scored"] == 4 and per_image["counts"]["duplicate_views_dropped"] == 0
    assert per_image["metrics"]["report"]["BLEU-1"] != card["metrics"]["report"]["BLEU-1"]


@pytest.mark.slow
def test_card_scores_the_first_view_of_each_study(meteor):
    records = _records()
    first_only = [r for r in records if r["id"] != "1_1"]
    card = score_records(records, meteor=meteor)
    expected = score_records(first_only, meteor=meteor)
    assert card["metrics"] == expected["metrics"]


@pytest.mark.slow
def test_perfect_predictions_score_one_and_raw_mode_differs(meteor):
    records = [{"id": str(i), "prediction": r, "reference": r} for i, r in enumerate((REF_A, REF_B, REF_C))]
    card = score_records(records, meteor=meteor)
    for section in ("report", "findings", "impression"):
        for metric in ("BLEU-1", "BLEU-4", "ROUGE-L"):
            assert card["metrics"][section][metric] == pytest.approx(1.0, abs=1e-6), (section, metric)
    lowered = [{**r, "prediction": r["prediction"].upper()} for r in records]
    assert score_records(lowered, meteor=meteor)["metrics"]["report"]["BLEU-1"] == pytest.approx(
        1.0, abs=1e-6
    )
    assert score_records(lowered, normalize=False, meteor=meteor)["metrics"]["report"]["BLEU-1"] < 0.2


@pytest.mark.slow
def test_bootstrap_ci_contains_point_and_is_seeded(meteor):
    gts, res = _load("iu_xray_fixed_template", "test_refs.json", "test_result.json")
    records = [
        {"id": k, "prediction": res[k][0], "reference": "Findings: " + gts[k][0]} for k in list(gts)[:150]
    ]
    card = score_records(records, bootstrap=200, seed=7, meteor=meteor)
    again = score_records(records, bootstrap=200, seed=7, meteor=meteor)
    other = score_records(records, bootstrap=200, seed=8, meteor=meteor)
    assert card["ci95"] == again["ci95"]
    assert card["ci95"]["report"] != other["ci95"]["report"]
    assert card["ci95"]["impression"] is None  # no reference has an impression: nothing to resample
    assert card["metrics"]["impression"] == dict.fromkeys(METRICS)
    for metric in METRICS:
        lo, hi = card["ci95"]["report"][metric]
        assert lo < card["metrics"]["report"][metric] < hi, metric
        assert hi - lo < 0.2, metric


# ---------------------------------------------------------------------------------------------------
# Legacy (the reference paper's metric code)


def _wordnet_or_skip():
    try:
        require_wordnet()
    except WordNetMissingError as e:
        assert WORDNET_HINT in str(e)
        pytest.skip(f"nltk WordNet is not installed ({WORDNET_HINT})")


def _by_hand(ref: str, pred: str) -> dict:
    """The reference script's formulas, written out with nltk and rouge directly."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from nltk.translate.meteor_score import meteor_score
    from rouge import Rouge

    r, h = [ref.split()], pred.split()
    smooth = SmoothingFunction().method7
    rouge = Rouge().get_scores([ref], [pred], avg=True)
    ref_words, cand_words = set(ref.lower().split()), set(pred.lower().split())
    p = len(ref_words & cand_words) / len(cand_words)
    rc = len(ref_words & cand_words) / len(ref_words)
    return {
        "B-1": sentence_bleu(r, h, weights=(1, 0, 0, 0), smoothing_function=smooth),
        "B-4": sentence_bleu(r, h, weights=(0.25,) * 4, smoothing_function=smooth),
        "B-3": sentence_bleu(r, h, weights=(0.33, 0.33, 0.33, 0), smoothing_function=smooth),
        "METEOR": meteor_score(r, h),
        "ROUGE-L": rouge["rouge-l"]["f"],
        "ROUGE-2": rouge["rouge-2"]["f"],
        "Precision": p,
        "Recall": rc,
        "F1": 2 * p * rc / (p + rc) if p + rc > 0 else 0,
    }


@pytest.mark.slow
def test_legacy_matches_the_reference_formulas_and_greedy_regex():
    _wordnet_or_skip()
    refs = [REF_A, REF_B]
    preds = [
        "Findings: The heart is normal. The lungs are clear. Impression: Normal chest.",
        "Findings: Cardiomegaly. Impression: Small effusion.",
    ]
    result = legacy_scores(refs, preds)
    # Greedy `Findings: (.+)`: the findings span runs to the end of the line, impression included.
    ref_findings = [r.split("Findings: ", 1)[1] for r in refs]
    assert "Impression:" in ref_findings[0]
    pred_findings = [p.split("Findings: ", 1)[1] for p in preds]
    ref_impr = [r.split("Impression: ", 1)[1] for r in refs]
    pred_impr = [p.split("Impression: ", 1)[1] for p in preds]
    for section, pairs in (
        ("findings", zip(ref_findings, pred_findings)),
        ("impression", zip(ref_impr, pred_impr)),
    ):
        by_hand = [_by_hand(r, p) for r, p in pairs]
        for key in by_hand[0]:
            expected = sum(s[key] for s in by_hand) / len(by_hand)
            assert result[section][key] == pytest.approx(expected, abs=1e-12), (section, key)
    assert result["unparsed_predictions"] == 0


def test_legacy_counts_unparsed_predictions_and_scores_them_empty():
    _wordnet_or_skip()
    result = legacy_scores([REF_A, REF_A], ["The heart is normal.", "Findings: The heart is normal in size."])
    assert result["unparsed_predictions"] == 2
    assert result["impression"]["B-1"] == 0.0 and result["impression"]["ROUGE-L"] == 0.0
    assert result["findings"]["B-1"] > 0


@pytest.mark.slow
def test_legacy_in_the_card(meteor):
    _wordnet_or_skip()
    card = score_records(_records(), legacy=True, meteor=meteor)
    assert card["legacy"]["samples"] == 4  # every line, like the reference
    assert set(card["legacy"]["findings"]) == {
        "B-1", "B-2", "B-3", "B-4", "METEOR", "ROUGE-1", "ROUGE-2", "ROUGE-L", "Precision", "Recall", "F1"
    }  # fmt: skip
    assert card["legacy"]["unparsed_predictions"] == 2


# ---------------------------------------------------------------------------------------------------
# METEOR's JVM: degenerate texts, a dead process

NORMAL = "Findings: The heart size is normal. The lungs are clear. Impression: No acute disease."


@pytest.mark.slow
def test_degenerate_prediction_is_cut_for_meteor_and_counted(meteor):
    """5,000 x "Effusion." (a model stuck in a loop) exhausted the jar's 2 GB heap after ~30 s
    (OutOfMemoryError in Aligner.resolve); METEOR now sees its first METEOR_MAX_WORDS words."""
    records = [{"id": str(i), "prediction": NORMAL, "reference": NORMAL} for i in range(7)]
    records.append({"id": "7", "prediction": "Effusion. " * 5000, "reference": NORMAL})
    card = score_records(records, meteor=meteor)
    assert card["counts"]["meteor_texts_cut"] == {"report": 1, "findings": 0, "impression": 0}
    assert 0 < card["metrics"]["report"]["METEOR"] < 1
    normal = score_records(records[:7], meteor=meteor)
    assert normal["counts"]["meteor_texts_cut"] == {"report": 0, "findings": 0, "impression": 0}


@pytest.mark.slow
def test_a_dead_jvm_is_one_line_error():
    scorer = MeteorScorer()
    scorer.meteor_p.kill()
    scorer.meteor_p.wait()
    with pytest.raises(MeteorError, match=r"METEOR's Java process .* died \(exit code -9\)"):
        scorer.stats_many(["a b"], [["a b"]])
    with pytest.raises(MeteorError, match="died"):
        scorer.corpus_score(["1 2 3"])
    scorer.close()  # no BrokenPipeError from the closed pipe
