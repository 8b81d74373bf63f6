"""The sentence-to-region classifier, region-structured text and the region-by-region scorer."""

from __future__ import annotations

import json

import pytest

from rrg.data.regions import (
    REGIONS,
    fit,
    format_regions,
    gold_sentences,
    gold_units,
    load_classifier,
    parse_regions,
    read_region_file,
    split_regions,
)
from rrg.io import InputError
from rrg.score.regions import score_regions


def test_committed_classifier_assigns_plain_sentences():
    clf = load_classifier()
    got = clf.regions_of(
        ["The lungs are clear.", "Heart size is normal.", "The mediastinum is unremarkable.",
         "No acute bony abnormality.", "A large hiatal hernia is noted."]
    )  # fmt: skip
    assert [g[0] for g in got] == list(REGIONS)


def test_cardiomediastinal_sentence_goes_into_both_regions():
    regions = split_regions("Cardiomediastinal silhouette is normal. Lungs are clear.", load_classifier())
    assert "Cardiomediastinal" in regions["heart"] and "Cardiomediastinal" in regions["mediastinal"]
    assert regions["lung"] == "Lungs are clear."


def test_format_and_parse_round_trip():
    regions = {
        "lung": "Lungs are clear.",
        "heart": "Heart normal.",
        "mediastinal": "",
        "bone": "",
        "others": "",
    }
    text = format_regions(regions)
    assert text.splitlines()[0] == "Lung: Lungs are clear." and text.splitlines()[2] == "Mediastinal:"
    assert parse_regions(text) == regions
    assert parse_regions("Findings: lungs clear.") is None


def test_fit_and_json_round_trip(tmp_path):
    sentences = ["lungs clear", "lungs are clear", "heart normal", "heart is normal", "spine intact",
                 "bones intact", "mediastinum normal", "mediastinal contour normal", "hernia", "hiatal hernia"]  # fmt: skip
    labels = [{"lung"}] * 2 + [{"heart"}] * 2 + [{"bone"}] * 2 + [{"mediastinal"}] * 2 + [{"others"}] * 2
    clf = fit(sentences, labels)
    from rrg.data.regions import RegionClassifier

    again = RegionClassifier.from_json(json.loads(json.dumps(clf.to_json())), "model.json")
    assert again.regions_of(["the heart is normal"]) == clf.regions_of(["the heart is normal"])
    assert again.regions_of(["the heart is normal"])[0][0] == "heart"
    with pytest.raises(InputError, match="model.json: weights do not match"):
        RegionClassifier.from_json({**clf.to_json(), "idf": [1.0]}, "model.json")


def test_gold_sentences_align_rewritten_and_split_sentences():
    report = "Cardiac and mediastinal contours are within normal limits. The lungs are clear. 2 images."
    regions = {"heart": "Cardiac contours are within normal limits.", "mediastinal": "Mediastinal contours are "
               "within normal limits.", "lung": "Lungs are clear.", "bone": "", "others": ""}  # fmt: skip
    gold = gold_sentences(regions, report)
    assert [g for _, g in gold] == [frozenset({"heart", "mediastinal"}), frozenset({"lung"}), frozenset()]


def test_gold_units_keep_the_placed_sentences_and_count_the_rest():
    report = "Cardiac and mediastinal contours are within normal limits. The lungs are clear. 2 images."
    regions = {"heart": "Cardiac contours are within normal limits.", "mediastinal": "Mediastinal contours are "
               "within normal limits.", "lung": "Lungs are clear.", "bone": "", "others": ""}  # fmt: skip
    units, unassigned = gold_units({"s1": regions}, {"s1": report}, [{"id": "s1"}])
    assert [g for _, g in units] == [frozenset({"heart", "mediastinal"}), frozenset({"lung"})]
    assert unassigned == 1  # "2 images." is in no region
    with pytest.raises(InputError, match="id 's2' is not in the R2Gen annotation"):
        gold_units({"s1": regions}, {"s1": report}, [{"id": "s2"}])


def test_region_file_errors_name_the_entry(tmp_path):
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"val": [{"id": "CXR1_IM-1", "report": {"lung": "x", "liver": "y"}}]}))
    with pytest.raises(InputError, match="regions.json: entry 0: 'report'"):
        read_region_file(path)
    path.write_text(json.dumps({"val": [{"id": "CXR1_IM-1", "report": {"lung": "Lungs clear."}}]}))
    assert read_region_file(path)["CXR1_IM-1"]["lung"] == "Lungs clear."


def test_score_regions_reads_structured_and_splits_free_text():
    seen = {}

    def fake_score(rows, **kwargs):
        seen[kwargs["source"]] = rows
        return {"counts": {"scored": len(rows)}, "metrics": {}}

    structured = (
        format_regions({"lung": "Lungs are clear.", "heart": "Heart is enlarged."}) + "\nImpression: x."
    )
    records = [
        {
            "id": "a",
            "prediction": structured,
            "reference": "Findings: Heart size is normal. The lungs are clear. A large hiatal hernia is noted. Impression: Normal.",
        },  # fmt: skip
        {
            "id": "b",
            "prediction": "Findings: The lungs are clear. Impression: Normal.",
            "reference": "Findings: No pneumothorax. Impression: Normal.",
        },  # fmt: skip
    ]
    block = score_regions(records, load_classifier(), score=fake_score)
    assert block["counts"]["structured"] == {"prediction": 1, "reference": 0}
    heart = seen["region heart"]
    assert heart == [{"id": "a", "prediction": "Heart is enlarged.", "reference": "Heart size is normal."}]
    lung = {r["id"]: r for r in seen["region lung"]}
    assert lung["b"]["prediction"] == "The lungs are clear." and lung["b"]["reference"] == "No pneumothorax."
    assert seen["region others"][0]["prediction"] == ""  # the Impression line is no region's text
    assert block["regions"]["bone"] is None  # no reference has bone text


@pytest.mark.slow
def test_plot_regions_draws_and_tabulates(tmp_path, capsys):
    from rrg.report.regions_figure import main

    def card(bleu: float) -> dict:
        metrics = dict.fromkeys(("BLEU-1", "BLEU-2", "BLEU-3", "METEOR", "ROUGE-L", "CIDEr"), 0.5)
        return {"counts": {"scored": 3}, "metrics": {"report": {**metrics, "BLEU-4": bleu}},
                "ci95": {"report": {"BLEU-4": [bleu - 0.1, bleu + 0.1]}},
                "clinical": {"summary": {"f1_micro_14": 0.7}}}  # fmt: skip

    block = {"regions": {"lung": card(0.25), "heart": card(0.5), "mediastinal": None, "bone": None,
             "others": None}, "counts": {}}  # fmt: skip
    path = tmp_path / "scores.json"
    path.write_text(json.dumps({"metrics": {}, "regions": block}))
    assert main(["--scores", str(path), "--out", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "| lung | 0.250 [0.150, 0.350] | 0.500 | 0.500 | 0.700 |" in out
    assert "| bone | - | - | - | - |" in out
    assert (tmp_path / "r.png").stat().st_size > 0
