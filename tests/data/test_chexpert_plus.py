"""rrg.data.chexpert_plus on a fixture in CheXpert Plus's layout (report CSV + PNG folder)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from rrg.data.chexpert_plus import ChexpertPlusConfig, build_chexpert_plus_splits
from rrg.io import InputError
from tests.dataset_fixtures import save_png

HEADER = ["path_to_image", "path_to_dcm", "frontal_lateral", "ap_pa", "deid_patient_id", "patient_report_date_order",
          "report", "section_clinical_history", "section_findings", "section_impression", "split"]


def make_chexpert_plus(root, rows, absent=()):
    with open(root / "df_chexpert_plus_240401.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for path, view, ap_pa, patient, history, findings, impression, split in rows:
            writer.writerow([path, path.replace(".jpg", ".dcm"), view, ap_pa, patient, "1", "", history, findings,
                             impression, split])
            if path not in absent:  # the release's images are PNGs under the table's (JPG) paths
                save_png(root / path.replace(".jpg", ".png"), np.zeros((8, 8), dtype=np.uint8))
    return root


ROWS = [
    ("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP", "patient00001", "Fever.", "Clear lungs.", "Normal.", "train"),
    ("train/patient00001/study1/view2_frontal.jpg", "Frontal", "PA", "patient00001", "Fever.", "Clear lungs.", "Normal.", "train"),
    ("train/patient00001/study1/view3_lateral.jpg", "Lateral", "", "patient00001", "Fever.", "Clear lungs.", "Normal.", "train"),
    ("train/patient00002/study1/view1_lateral.jpg", "Lateral", "", "patient00002", "", "Lungs.", "Fine.", "train"),
    ("valid/patient64541/study1/view1_frontal.jpg", "Frontal", "AP", "patient64541", "", "", "Effusion.", "valid"),
    ("valid/patient64542/study1/view1_frontal.jpg", "Frontal", "AP", "patient64542", "Cough", "Opacity.", "Pneumonia.", "valid"),
]


def test_studies_views_sections_and_skips(tmp_path):
    make_chexpert_plus(tmp_path, ROWS)
    splits, audit = build_chexpert_plus_splits(tmp_path, None, ChexpertPlusConfig(views="both", indication=True))
    (train,) = splits["train"]
    assert train.images == ["train/patient00001/study1/view2_frontal.png", "train/patient00001/study1/view3_lateral.png"]
    assert train.views == ["Frontal", "Lateral"] and train.response == "Findings: Clear lungs. Impression: Normal."
    assert "Indication: Fever." in train.prompt
    assert [e.id for e in splits["val"]] == ["valid/patient64542/study1"]
    assert audit["skipped"]["no frontal image"]["examples"] == ["train/patient00002/study1"]
    assert audit["skipped"]["no findings section"]["examples"] == ["valid/patient64541/study1"]
    impression_only, _ = build_chexpert_plus_splits(tmp_path, None, ChexpertPlusConfig(target="impression"))
    assert len(impression_only["val"]) == 2


def test_bad_layouts_are_one_line(tmp_path):
    with pytest.raises(InputError, match="df_chexpert_plus_240401.csv: file not found"):
        build_chexpert_plus_splits(tmp_path, None, ChexpertPlusConfig())
    make_chexpert_plus(tmp_path, ROWS, absent=[ROWS[1][0]])
    with pytest.raises(InputError, match="view2_frontal.jpg: image of study train/patient00001/study1 not found"):
        build_chexpert_plus_splits(tmp_path, None, ChexpertPlusConfig())
    rows = [*ROWS[:2], ("valid/patient00001/study2/view1_frontal.jpg", "Frontal", "AP", "patient00001", "", "a", "b", "valid")]
    make_chexpert_plus(tmp_path, rows)
    with pytest.raises(InputError, match="subject patient00001 is in several splits"):
        build_chexpert_plus_splits(tmp_path, None, ChexpertPlusConfig())
    make_chexpert_plus(tmp_path, [("train/patient9/study1/view1.jpg", "Oblique", "", "patient9", "", "a", "b", "train")])
    with pytest.raises(InputError, match=r"df_chexpert_plus_240401.csv:2: unknown frontal_lateral 'Oblique'"):
        build_chexpert_plus_splits(tmp_path, None, ChexpertPlusConfig())
