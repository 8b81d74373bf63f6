"""rrg.data.mimic_cxr and report2json --dataset mimic-cxr on fixtures in MIMIC-CXR-JPG's exact layout."""

from __future__ import annotations

import gzip
import json

import pytest

from rrg.data.entries import load_entries
from rrg.data.mimic_cxr import MimicConfig, build_mimic_splits
from rrg.io import InputError
from tests.dataset_fixtures import make_mimic, mimic_studies, write_gz_csv


@pytest.mark.parametrize("reports_zip", [False, True])
def test_official_split_views_and_sections(tmp_path, reports_zip):
    data, reports = make_mimic(tmp_path, mimic_studies(), reports_zip=reports_zip)
    splits, audit = build_mimic_splits(data, reports, MimicConfig(views="both"))
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert [e.id for e in train] == ["s50414267"] and [e.id for e in val] == ["s57375967"] and test == []
    first = train[0]
    # PA preferred over AP, LATERAL as the second view
    assert first.images == ["files/p10/p10000032/s50414267/d-pa.jpg", "files/p10/p10000032/s50414267/d-lat.jpg"]
    assert first.views == ["Frontal", "Lateral"]
    assert first.findings == "The lungs are clear.  No pleural effusion or pneumothorax.\n Heart size is normal."
    assert first.impression == "No acute cardiopulmonary process."
    assert first.response.startswith("Findings: The lungs") and "Impression: No acute" in first.response
    assert val[0].images[1].endswith("d3-ll.jpg") and val[0].views == ["Frontal", "Lateral"]
    skipped = audit["skipped"]
    assert skipped["no findings section"]["examples"] == ["53189527"]
    assert skipped["no PA/AP frontal image"]["examples"] == ["50771383"]
    assert skipped["no report file"]["examples"] == ["51178377"]
    assert audit["studies_with_chexpert_labels"] == 2


def test_impression_target_and_frontal_only(tmp_path):
    data, reports = make_mimic(tmp_path, mimic_studies())
    splits, _ = build_mimic_splits(data, reports, MimicConfig(target="impression", indication=True))
    ids = [e.id for e in splits["train"]]
    assert ids == ["s50414267", "s53189527"]
    second = splits["train"][1]
    assert second.response == "Impression: Mild pulmonary edema." and second.findings is None
    assert len(splits["train"][0].images) == 1
    assert "Indication: ___-year-old man with cough." in splits["train"][0].prompt


def test_cli_writes_files_the_trainer_reads(tmp_path):
    from rrg.data.report2json import main

    data, reports = make_mimic(tmp_path, mimic_studies(), reports_zip=True)
    out = tmp_path / "splits"
    argv = ["--dataset", "mimic-cxr", "--data_dir", str(data), "--reports", str(reports), "--out", str(out)]
    assert main(argv) == 0
    entries = load_entries(out / "train_report.json")
    assert [e.id for e in entries] == ["s50414267"]
    assert (data / entries[0].images[0]).is_file()
    audit = json.loads((out / "dataset_audit.json").read_text())
    assert audit["splits"]["train"]["studies"] == 1 and audit["dataset"] == "mimic-cxr"


def one_line(excinfo, *parts):
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_missing_csv_is_one_line(tmp_path):
    data, reports = make_mimic(tmp_path, mimic_studies())
    (data / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(InputError) as e:
        build_mimic_splits(data, reports, MimicConfig())
    one_line(e, "mimic-cxr-2.0.0-metadata.csv.gz", "not found")


def test_unknown_view_position_names_the_line(tmp_path):
    studies = mimic_studies()
    studies[2]["images"][1] = ("d3-ap", "UPSIDE DOWN")
    data, reports = make_mimic(tmp_path, studies)
    with pytest.raises(InputError) as e:
        build_mimic_splits(data, reports, MimicConfig())
    one_line(e, "mimic-cxr-2.0.0-metadata.csv.gz:7", "UPSIDE DOWN")


def test_study_without_images_on_disk(tmp_path):
    studies = mimic_studies()
    studies[0]["absent"] = ["d-pa"]
    data, reports = make_mimic(tmp_path, studies)
    with pytest.raises(InputError) as e:
        build_mimic_splits(data, reports, MimicConfig())
    one_line(e, "s50414267/d-pa.jpg", "not found")
    splits, audit = build_mimic_splits(data, reports, MimicConfig(skip_missing=True))
    assert audit["skipped"]["image file missing"]["examples"] == ["50414267"]
    assert splits["train"] == []


def test_subject_in_two_splits_is_an_error(tmp_path):
    studies = mimic_studies()
    studies[2]["subject"] = "10000032"  # the train subject's study put in validate
    data, reports = make_mimic(tmp_path, studies)
    with pytest.raises(InputError) as e:
        build_mimic_splits(data, reports, MimicConfig())
    one_line(e, "mimic-cxr-2.0.0-split.csv.gz", "subject 10000032", "several splits")


def test_missing_column_and_bad_split_value(tmp_path):
    data, reports = make_mimic(tmp_path, mimic_studies())
    write_gz_csv(data / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id"], [["a", "1", "2"]])
    with pytest.raises(InputError) as e:
        build_mimic_splits(data, reports, MimicConfig())
    one_line(e, "mimic-cxr-2.0.0-split.csv.gz", "'split'")
    write_gz_csv(data / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"],
                 [["d-pa", "50414267", "10000032", "training"]])
    with pytest.raises(InputError) as e:
        build_mimic_splits(data, reports, MimicConfig())
    one_line(e, "mimic-cxr-2.0.0-split.csv.gz:2", "'training'")
    with gzip.open(data / "mimic-cxr-2.0.0-split.csv.gz", "rb") as f:
        assert f.read()  # the fixture is a real gzip file
