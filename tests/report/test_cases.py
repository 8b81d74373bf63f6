"""rrg.report.cases: word overlap, per-study scores and the per-study cases the case browser and the qualitative
figure show."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from pycocoevalcap.rouge.rouge import my_lcs

from rrg.data.sections import parse_sections
from rrg.io import InputError
from rrg.report.cases import (
    build_cases,
    lcs_pairs,
    load_run,
    overlap,
    report_words,
    scored_words,
    study_scores,
)
from rrg.score.card import corpus_scores
from rrg.score.ngram import normalize_report
from tests.helpers import IMAGES, INDICATIONS, LORA, REFERENCES, shared_path, write_run, write_runs


def _hits(prediction: str, reference: str) -> tuple[list[str], list[str]]:
    pred, ref = report_words(prediction), report_words(reference)
    pred_hits, ref_hits = overlap(pred, ref)
    return [pred.words[i] for i in pred_hits], [ref.words[i] for i in ref_hits]


def test_overlap_marks_the_common_words_in_order_ignoring_case_and_punctuation():
    pred, ref = (
        report_words("The heart is normal. Lungs clear."),
        report_words("Heart size is normal; the lungs are clear."),
    )
    assert overlap(pred, ref) == ([1, 2, 3, 4, 5], [0, 2, 3, 5, 7])


def test_overlap_never_matches_punctuation_list_numbers_or_headings():
    pred_words, ref_words = _hits(
        "Findings: heart & normal. Impression: 1. No acute process. 2. Stable.",
        "Findings: heart & normal. Impression: 1. No acute process. 2. Stable.",
    )
    assert pred_words == ref_words == ["heart", "normal.", "No", "acute", "process.", "Stable."]


def test_report_words_drop_headings_and_remember_where_sections_start():
    words = report_words("Findings:  The heart\nis normal.  IMPRESSION: Normal chest.")
    assert words.text == "The heart is normal. Normal chest."
    assert words.marks == [(0, "findings"), (4, "impression")]
    assert report_words("").words == []


def test_lcs_pairs_is_a_longest_common_subsequence():
    rng = random.Random(0)
    for _ in range(60):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 25))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 25))]
        pairs = lcs_pairs(a, b)
        assert len(pairs) == my_lcs(a, b)  # pycocoevalcap's ROUGE-L length
        assert all(a[i] == b[j] for i, j in pairs)
        assert all(i1 < i2 and j1 < j2 for (i1, j1), (i2, j2) in zip(pairs, pairs[1:]))


def test_highlighted_words_are_the_words_the_scorer_sees_in_real_reports():
    """The browser's word keys equal the scorer's normalised tokens (R2Gen cleaning, periods aside) for
    the real IU X-Ray reports, list numbering included; R2Gen's "1. " removal inside "T11. " is the
    one known quirk, in 2 of 3,331 reports."""
    reports = pd.read_csv(shared_path("iu_xray", "report.csv"))
    differ = 0
    for findings, impression in zip(reports["findings"], reports["impression"]):
        text = f"Findings: {findings} Impression: {impression}"
        keys = [key for _, key in scored_words(report_words(text).words)]
        scorer = [t for t in normalize_report(parse_sections(text).body).split() if t != "."]
        differ += keys != scorer
    assert differ <= 2, f"{differ} of {len(reports)} reports tokenised differently from the scorer"


def test_study_scores_are_the_scorers_figures_for_each_study():
    ids = list(LORA)
    predictions = [LORA[s] for s in ids]
    references = [[REFERENCES[s]] for s in ids]
    scores = study_scores(predictions, references)

    def norm(text: str) -> str:
        return normalize_report(parse_sections(text).body)

    for k, s in enumerate(ids):
        alone = corpus_scores({0: [norm(REFERENCES[s])]}, {0: [norm(LORA[s])]}, metrics=("BLEU-4", "ROUGE-L"))
        assert scores[k] == pytest.approx(alone)
    corpus = corpus_scores(
        {k: [norm(REFERENCES[s])] for k, s in enumerate(ids)},
        {k: [norm(LORA[s])] for k, s in enumerate(ids)},
        metrics=("ROUGE-L",),
    )
    assert sum(s["ROUGE-L"] for s in scores) / len(scores) == pytest.approx(corpus["ROUGE-L"])
    assert scores[0]["ROUGE-L"] > scores[1]["ROUGE-L"] > scores[2]["ROUGE-L"]  # the fixture's intent
    assert study_scores(["", "Findings: heart"], [["Findings: heart"], ["Findings: heart"]])[0] == {
        "BLEU-4": pytest.approx(0.0),
        "ROUGE-L": 0.0,
    }


def test_build_cases_matches_runs_by_study_and_attaches_the_control(tmp_path, capsys):
    lora, zero_shot = write_runs(tmp_path)
    partial = write_run(tmp_path / "results" / "partial", {"7": LORA["7"]})
    image_dir = shared_path("iu_xray", "images")
    runs = [load_run(lora), load_run(zero_shot), load_run(partial)]
    cases = build_cases(runs, image_dir=image_dir)

    assert [c["id"] for c in cases] == list(LORA)
    assert "run 'partial' has no prediction for 2 of 3 studies" in capsys.readouterr().err
    by_id = {c["id"]: c for c in cases}
    assert by_id["1900"]["runs"][2] is None and by_id["7"]["runs"][2]["text"]
    assert [i["name"] for i in by_id["1900"]["images"]] == IMAGES["1900"]
    assert all(i["path"] and (image_dir / i["name"]).samefile(i["path"]) for c in cases for i in c["images"])
    assert {c["id"]: c["indication"] for c in cases} == INDICATIONS  # from the clean protocol's prompt

    lora_1900 = by_id["1900"]["runs"][0]
    assert lora_1900["control"]["condition"] == "blank" and "control" not in by_id["1900"]["runs"][1]
    assert lora_1900["text"] == report_words(LORA["1900"]).text
    pred = lora_1900["text"].split(" ")
    ref = by_id["1900"]["reference"]["text"].split(" ")
    assert [pred[i] for i in lora_1900["hits"]][:3] == ["The", "heart", "is"]
    assert [ref[i] for i in lora_1900["ref_hits"]][:3] == ["The", "heart", "is"]
    assert lora_1900["scores"] == study_scores([LORA["1900"]], [[REFERENCES["1900"]]])[0]
    # The second run is scored against the first run's references, study by study.
    assert by_id["7"]["runs"][2]["scores"] == by_id["7"]["runs"][0]["scores"]
    json.dumps(cases)  # the page embeds them as they are


def test_a_study_with_one_line_per_view_is_shown_once_with_all_its_views(tmp_path):
    folder = tmp_path / "per_view"
    folder.mkdir()
    lines = [
        {
            "id": "7_0",
            "study_id": "7",
            "images": [IMAGES["7"][0]],
            "prediction": "Lungs clear.",
            "reference": REFERENCES["7"],
        },
        {
            "id": "7_1",
            "study_id": "7",
            "images": [IMAGES["7"][1]],
            "prediction": "Other view.",
            "reference": REFERENCES["7"],
        },
    ]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    entries = tmp_path / "test_report.json"
    entries.write_text(
        json.dumps(
            [
                {
                    "id": "7",
                    "study_id": "7",
                    "images": IMAGES["7"],
                    "views": ["Frontal", "Lateral"],
                    "prompt": "q",
                    "response": REFERENCES["7"],
                    "indication": "Cough",
                }
            ]
        )
    )
    (case,) = build_cases([load_run(folder)], entries=entries, image_dir=tmp_path / "nowhere")
    assert case["runs"][0]["text"] == "Lungs clear." and case["runs"][0]["extra_lines"] == 1
    assert [(i["name"], i["view"], i["path"]) for i in case["images"]] == [
        (IMAGES["7"][0], "Frontal", None),
        (IMAGES["7"][1], "Lateral", None),
    ]
    assert case["indication"] == "Cough"


def test_missing_results_and_moved_control_files(tmp_path, capsys):
    with pytest.raises(InputError, match="predictions.jsonl"):
        load_run(tmp_path / "nothing")
    lora, _ = write_runs(tmp_path)
    moved = tmp_path / "moved"
    lora.rename(moved)  # scores.json still names the old control path: it is found beside the predictions
    run = load_run(moved)
    assert run.control_condition == "blank" and set(run.control) == set(LORA)
    (moved / "predictions.blank.jsonl").unlink()
    assert load_run(moved).control is None
    assert "image-control predictions" in capsys.readouterr().err
