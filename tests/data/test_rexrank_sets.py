"""ReXrank's MIMIC-CXR and CheXpert Plus sets as split files (rrg.data.rexrank_sets), on the real JSONs."""

from __future__ import annotations

import json

import pytest

from rrg.data.entries import load_entries
from rrg.data.mimic_cxr import MimicConfig
from rrg.data.rexrank_sets import context_indication, rexrank_entries, view_name
from tests.dataset_fixtures import make_mimic, mimic_studies
from tests.helpers import shared_path


def test_mimic_set_from_the_real_json():
    entries = rexrank_entries(shared_path("rexrank", "ReXRank_MIMICCXR_test.json"), "mimic-cxr", views="both")
    assert len(entries) == 2347 and len({e.study_id for e in entries}) == 2347
    first = next(e for e in entries if e.id == "50051329")
    # the key image first (an antero-posterior view), then a lateral, with MIMIC-CXR-JPG's files/ prefix
    assert first.images == [
        "files/p10/p10046166/s50051329/abea5eb9-b7c32823-3a14c5ca-77868030-69c83139.jpg",
        "files/p10/p10046166/s50051329/427446c1-881f5cce-85191ce1-91a58ba9-0a57d3f5.jpg",
    ]
    assert first.views == ["Frontal", "Lateral"]
    assert first.impression == "No evidence of acute cardiopulmonary process."
    assert first.indication.startswith("___-year-old male with history of metastatic melanoma")
    assert all(e.findings for e in entries)  # ReXrank scores MIMIC-CXR findings; 723 have no impression
    assert sum(e.impression is None for e in entries) == 723


def test_chexpert_plus_set_from_the_real_json():
    entries = rexrank_entries(shared_path("rexrank", "ReXRank_CheXpertPlus.json"), "chexpert-plus")
    assert len(entries) == 200
    no_findings = [e for e in entries if e.findings is None]
    assert len(no_findings) == 138 and all(e.response.startswith("Impression: ") for e in no_findings)
    assert all(e.images[0].startswith("valid/patient") for e in entries)


def test_labels_and_context():
    assert [view_name(v) for v in ("antero-posterior", "postero-anterior", "left lateral", "Frontal", float("nan"), "Erect")] == [
        "Frontal", "Frontal", "Lateral", "Frontal", "Unknown", "Unknown"]
    assert context_indication("Age:77.0.Gender:F.Indication:nanComparison: None.") is None
    assert context_indication("Age:50-60.Gender:M.Indication: Cough.  Fever.") == "Cough. Fever."


def test_rexrank_test_with_the_official_train(tmp_path):
    from rrg.data.report2json import main

    studies = mimic_studies()
    data, reports = make_mimic(tmp_path, studies)
    rexrank = tmp_path / "rexrank.json"
    # the validate subject is also in ReXrank's test: dropped from val (counted)
    rexrank.write_text(json.dumps({"57375967": {
        "image_path": ["/p10/p10000764/s57375967/d3-ap.jpg"], "key_image_path": "/p10/p10000764/s57375967/d3-ap.jpg",
        "frontal_lateral": ["antero-posterior"], "section_findings": "F.", "section_impression": "I.",
        "subject_id": 10000764, "context": "Indication: x"}}))
    out = tmp_path / "out"
    argv = ["--dataset", "mimic-cxr", "--data_dir", str(data), "--reports", str(reports), "--out", str(out),
            "--test_set", "rexrank", "--rexrank_json", str(rexrank)]
    assert main(argv) == 0
    assert [e.id for e in load_entries(out / "test_report.json")] == ["57375967"]
    assert load_entries(out / "val_report.json") == []
    assert [e.id for e in load_entries(out / "train_report.json")] == ["s50414267"]
    audit = json.loads((out / "dataset_audit.json").read_text())
    assert audit["val_dropped_for_rexrank"]["patient in ReXrank's test set"]["count"] == 1
    # a ReXrank patient in the official train is an error
    data_json = json.loads(rexrank.read_text())
    data_json["57375967"]["subject_id"] = 10000032
    rexrank.write_text(json.dumps(data_json))
    with pytest.raises(SystemExit):
        main(argv)
    assert MimicConfig().views == "frontal"
