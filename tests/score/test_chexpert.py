"""The offline CheXpert-14 labeler (rrg.score.clinical.labeler) and the MeSH map it is validated against."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rrg.score.clinical.labeler import (
    NEGATIVE,
    OBSERVATIONS,
    POSITIVE,
    UNCERTAIN,
    clean_text,
    label_report_sections,
    label_reports,
    report_mentions,
)
from rrg.score.clinical.mesh import mesh_observations


def labels(text: str) -> dict:
    (out,) = label_reports([text])
    assert list(out) == list(OBSERVATIONS)
    return out


# --------------------------------------------------------------------------------------------------
# Mention, negation, uncertainty


@pytest.mark.parametrize(
    "text, observation, expected",
    [
        ("No pleural effusion.", "Pleural Effusion", NEGATIVE),
        ("There is no pneumothorax or pleural effusion.", "Pneumothorax", NEGATIVE),
        (
            "Lungs are clear without focal consolidation, effusion, or pneumothorax.",
            "Pleural Effusion",
            NEGATIVE,
        ),
        ("Negative for pneumothorax.", "Pneumothorax", NEGATIVE),
        ("Small left pleural effusion.", "Pleural Effusion", POSITIVE),
        ("May represent atelectasis.", "Atelectasis", UNCERTAIN),
        ("Bibasilar opacities, possibly atelectasis.", "Atelectasis", UNCERTAIN),
        ("Findings are concerning for pneumonia.", "Pneumonia", UNCERTAIN),
        ("Cannot exclude pneumonia.", "Pneumonia", UNCERTAIN),  # pre-negation uncertainty beats "not"
        ("Pneumonia is not excluded.", "Pneumonia", UNCERTAIN),
        ("Left base atelectasis or scarring.", "Atelectasis", UNCERTAIN),  # CheXpert: "X or Y"
        ("Consistent with CHF.", "Edema", POSITIVE),
        ("Consistent with CHF.", "Cardiomegaly", UNCERTAIN),  # CheXpert's heart-failure exception
        ("Mild pulmonary vascular congestion.", "Edema", POSITIVE),
        ("Old right rib fractures.", "Fracture", POSITIVE),
        ("Left PICC line with tip in the SVC.", "Support Devices", POSITIVE),
    ],
)
def test_mention_negation_uncertainty(text, observation, expected):
    assert labels(text)[observation] == expected


@pytest.mark.parametrize(
    "text, observation, expected",
    [  # IU X-Ray's own phrasing, anonymised "XXXX" included
        ("Heart size is normal.", "Cardiomegaly", NEGATIVE),
        ("Heart size within normal limits.", "Cardiomegaly", NEGATIVE),
        ("Normal heart size.", "Cardiomegaly", NEGATIVE),
        ("The heart is not enlarged.", "Cardiomegaly", NEGATIVE),
        ("The cardiomediastinal silhouette is within normal limits.", "Enlarged Cardiomediastinum", NEGATIVE),
        ("No focal airspace consolidation.", "Consolidation", NEGATIVE),
        ("There are no XXXX of a pleural effusion.", "Pleural Effusion", NEGATIVE),
        ("The heart is enlarged.", "Cardiomegaly", POSITIVE),
        ("Borderline heart size.", "Cardiomegaly", UNCERTAIN),
        ("Mild cardiomegaly.", "Cardiomegaly", POSITIVE),
        ("Enlarged cardiomediastinal silhouette.", "Enlarged Cardiomediastinum", POSITIVE),
        # Anatomy named without a cue is no finding (CheXpert would call it cardiomegaly).
        ("The heart and lungs have XXXX XXXX in the interval.", "Cardiomegaly", None),
        ("Stable mediastinal and hilar contours.", "Enlarged Cardiomediastinum", None),
        ("Right chest XXXX tip is visualized in the distal SVC.", "Support Devices", POSITIVE),
    ],
)
def test_iu_xray_phrasing(text, observation, expected):
    assert labels(text)[observation] == expected


@pytest.mark.parametrize(
    "text, observation",
    [
        ("Plate-like atelectasis at the left base.", "Support Devices"),  # "plate" inside a word
        ("History of tuberculosis.", "Support Devices"),  # "tube" inside a word
        ("Small pericardial effusion.", "Pleural Effusion"),  # CheXpert unmention
        ("Calcified nodule in the right upper lobe.", "Lung Lesion"),  # CheXpert unmention
        ("Prior granulomatous infection.", "Pneumonia"),
        ("Prominent hilar contours.", "Enlarged Cardiomediastinum"),
    ],
)
def test_words_that_are_not_mentions(text, observation):
    assert labels(text)[observation] is None


def test_mentions_of_one_observation_combine_as_chexpert_does():
    assert labels("No effusion on the right. Small left effusion.")["Pleural Effusion"] == POSITIVE
    assert labels("No effusion on the right. Possible left effusion.")["Pleural Effusion"] == UNCERTAIN
    assert labels("Possible atelectasis. Atelectasis at the left base.")["Atelectasis"] == POSITIVE


def test_mentions_carry_their_sentence():
    (found,) = report_mentions(["Heart size is normal. May represent atelectasis."])
    assert [(m.observation, m.text, m.label) for m in found] == [
        ("Cardiomegaly", "heart size", NEGATIVE),
        ("Atelectasis", "atelectasis", UNCERTAIN),
    ]
    assert found[1].sentence == "may represent atelectasis."


# --------------------------------------------------------------------------------------------------
# No Finding


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Heart size is normal. Lungs are clear. No pneumothorax or pleural effusion.", POSITIVE),
        ("", POSITIVE),  # nothing found
        ("Left PICC line in place. No acute disease.", POSITIVE),  # support devices do not count
        ("Small left pleural effusion.", None),
        ("Possible left lower lobe pneumonia.", None),  # uncertain counts as a finding
        ("Degenerative changes of the thoracic spine.", None),  # a finding outside the 13
        ("Calcified granuloma in the right upper lobe.", None),
        ("No emphysema.", POSITIVE),  # a negated other finding is no finding
    ],
)
def test_no_finding(text, expected):
    out = labels(text)
    assert out["No Finding"] == expected
    assert NEGATIVE not in {out["No Finding"]}  # CheXpert never labels No Finding negative


# --------------------------------------------------------------------------------------------------
# Sections and cleaning


def test_section_labels():
    text = "Findings: Mild cardiomegaly. No pleural effusion. Impression: No acute disease."
    (out,) = label_report_sections([text, "Impression: Possible pneumonia."])[:1]
    assert out["findings"]["Cardiomegaly"] == POSITIVE
    assert out["findings"]["Pleural Effusion"] == NEGATIVE
    assert out["impression"]["Cardiomegaly"] is None
    assert out["impression"]["No Finding"] == POSITIVE
    assert out["report"]["Cardiomegaly"] == POSITIVE and out["report"]["No Finding"] is None

    (only_impression,) = label_report_sections(["Impression: Possible pneumonia."])
    assert only_impression["findings"] is None
    assert only_impression["impression"]["Pneumonia"] == UNCERTAIN


def test_clean_text_is_chexperts():
    assert clean_text("Atelectasis  and/or Effusion..Heart/Lungs,clear") == (
        "atelectasis or effusion. heart or lungs, clear"
    )


# --------------------------------------------------------------------------------------------------
# MeSH map and real reports


@pytest.mark.parametrize(
    "field, expected",
    [
        ("normal", {"No Finding"}),
        ("No Indexing", None),
        ("Cardiomegaly/borderline;Pulmonary Artery/enlarged", {"Cardiomegaly"}),
        ("Opacity/lung/base/left;Pulmonary Atelectasis/base", {"Lung Opacity", "Atelectasis"}),
        ("Cicatrix/lung/upper lobe/left", {"Lung Opacity"}),
        ("Cicatrix/pleura/apex", {"Pleural Other"}),
        ("Opacity/lung/middle lobe/right/round", {"Lung Opacity", "Lung Lesion"}),
        ("Calcified Granuloma/lung/upper lobe/right", set()),  # outside the 13
        ("Catheters, Indwelling/right", {"Support Devices", "No Finding"}),  # devices only
        ("Catheters, Indwelling/right;Emphysema", {"Support Devices"}),
    ],
)
def test_mesh_map(field, expected):
    assert mesh_observations(field) == expected


def test_real_reports_agree_with_their_mesh_labels(iu_xray_dir):
    """The first 300 annotated IU X-Ray reports: the labeler's positives against MeSH's, per report."""
    table = pd.read_csv(iu_xray_dir / "indiana_reports.csv", dtype=str, keep_default_na=False)
    table["text"] = (table["findings"] + " " + table["impression"]).str.strip()
    table = table[(table["text"] != "") & (table["MeSH"] != "No Indexing")].head(300)
    tp = fp = fn = 0
    for out, field in zip(label_reports(list(table["text"])), table["MeSH"]):
        truth = mesh_observations(field)
        found = {o for o, v in out.items() if v in (POSITIVE, UNCERTAIN)}
        tp, fp, fn = tp + len(found & truth), fp + len(found - truth), fn + len(truth - found)
    assert 2 * tp / (2 * tp + fp + fn) >= 0.85


def test_committed_validation_hangs_together():
    """results/labeler_validation.json is the run the README quotes: its sums and bar agree."""
    from tests.helpers import REPO

    result = json.loads((REPO / "results" / "labeler_validation.json").read_text())
    micro, per, counts = result["micro"], result["per_observation"], result["counts"]
    assert counts["validated"] == counts["reports"] - counts["no_text"] - counts["not_annotated"]
    for key in ("tp", "fp", "fn"):
        assert sum(v[key] for v in per.values()) == micro[key]
    assert micro["f1"] == pytest.approx(
        2 * micro["tp"] / (2 * micro["tp"] + micro["fp"] + micro["fn"]), abs=1e-4
    )
    assert result["bar"]["micro_f1_met"] == (micro["f1"] >= 0.85)


@pytest.mark.slow
def test_validation_script_counts_by_hand(tmp_path, capsys):
    rows = [  # uid, MeSH, findings, impression
        ("1", "normal", "Heart size is normal. No pleural effusion.", "No acute disease."),
        ("2", "Pleural Effusion/left/small", "Small left pleural effusion.", "Effusion."),
        ("3", "Pulmonary Atelectasis/base", "Heart size is normal.", "No acute disease."),  # fn Atelectasis
        ("4", "No Indexing", "Mild cardiomegaly.", ""),  # not annotated: left out
        ("5", "normal", "", ""),  # no text: left out
        ("6", "Cardiomegaly", "Mild cardiomegaly. Possible left pleural effusion.", ""),  # fp Effusion
    ]
    table = pd.DataFrame(rows, columns=["uid", "MeSH", "findings", "impression"])
    table.to_csv(tmp_path / "indiana_reports.csv", index=False)
    from rrg.score.clinical import validate as module

    out = module.main(["--data_dir", str(tmp_path), "--out", str(tmp_path / "v.json")])
    assert out["counts"] == {"reports": 6, "no_text": 1, "not_annotated": 1, "validated": 4}
    per = out["per_observation"]
    # Reports 1 and 3 are No Finding for the labeler; only report 1 for MeSH.
    assert (per["No Finding"]["tp"], per["No Finding"]["fp"], per["No Finding"]["fn"]) == (1, 1, 0)
    assert (per["Pleural Effusion"]["tp"], per["Pleural Effusion"]["fp"], per["Pleural Effusion"]["fn"]) == (
        1,
        1,
        0,
    )
    assert (per["Atelectasis"]["tp"], per["Atelectasis"]["fn"]) == (0, 1)
    assert per["Cardiomegaly"]["f1"] == 1.0
    assert out["micro"] == {"precision": 0.6, "recall": 0.75, "f1": 0.6667, "tp": 3, "fp": 2, "fn": 1}
    # With uncertain as negative, report 6's possible effusion is no longer a false positive.
    assert out["uncertain_as_negative"]["per_observation"]["Pleural Effusion"]["fp"] == 0
    assert json.loads((tmp_path / "v.json").read_text())["micro"] == out["micro"]
    assert "| **micro** |" in capsys.readouterr().out
