"""Clinical scores (rrg.score.clinical.f1): the F1 arithmetic by hand, bootstrap resamples, the scorer's block,
the image-control delta, and the one-line errors of the optional model-based backends."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import rrg.score.clinical.f1 as clinical
from rrg.generate.run import format_delta, metric_delta
from rrg.report import metrics_figure, tables
from rrg.score.card import resample_weights, score_records
from rrg.score.clinical.f1 import (
    BackendUnavailable,
    binarize,
    clinical_scores,
    confusion_counts,
    delta_table,
    label_f1,
    summary_scores,
)
from rrg.score.clinical.labeler import OBSERVATIONS, label_reports
from rrg.score.meteor import MeteorScorer

REPO = Path(__file__).resolve().parents[2]
P, U = "positive", "uncertain"


def row(**labels: str) -> dict:
    return {o: labels.get(o.replace(" ", "_")) for o in OBSERVATIONS}


# Four studies; the expected counts are worked out in the comments.
PRED = [
    row(Cardiomegaly=P, Edema=U),  # A: Cardiomegaly tp; Edema fp only if uncertain counts as positive
    row(Atelectasis=P),  # B: Atelectasis tp; Pleural Effusion fn
    row(Pleural_Effusion=P),  # C: Pleural Effusion fp; No Finding fn
    row(No_Finding=P),  # D: No Finding tp
]
REF = [
    row(Cardiomegaly=P),
    row(Atelectasis=P, Pleural_Effusion=P),
    row(No_Finding=P),
    row(No_Finding=P),
]


def test_f1_by_hand_uncertain_positive():
    out = label_f1(PRED, REF, "positive")
    per = out["per_observation"]
    assert (per["Cardiomegaly"]["tp"], per["Cardiomegaly"]["f1"]) == (1, 1.0)
    assert (per["Edema"]["fp"], per["Edema"]["f1"]) == (1, 0.0)
    assert (per["Pleural Effusion"]["fp"], per["Pleural Effusion"]["fn"], per["Pleural Effusion"]["f1"]) == (
        1,
        1,
        0,
    )
    assert per["No Finding"]["precision"] == 1.0 and per["No Finding"]["recall"] == 0.5
    assert per["No Finding"]["f1"] == pytest.approx(2 / 3)
    s = out["summary"]
    # 14: tp 3 (Cardiomegaly, Atelectasis, No Finding), fp 2 (Edema, Effusion), fn 2 (Effusion, No Finding)
    assert s["f1_micro_14"] == pytest.approx(6 / 10)
    assert s["precision_micro_14"] == pytest.approx(3 / 5) and s["recall_micro_14"] == pytest.approx(3 / 5)
    # macro 14: F1 1 (Cardiomegaly) + 1 (Atelectasis) + 2/3 (No Finding), 11 observations at 0
    assert s["f1_macro_14"] == pytest.approx((2 + 2 / 3) / 14)
    # 5: tp 2, fp 2 (Edema, Effusion), fn 1 (Effusion)
    assert s["f1_micro_5"] == pytest.approx(4 / 7)
    assert s["precision_micro_5"] == pytest.approx(0.5) and s["recall_micro_5"] == pytest.approx(2 / 3)
    assert s["f1_macro_5"] == pytest.approx(2 / 5)


def test_uncertain_as_negative_drops_the_uncertain_prediction():
    s = label_f1(PRED, REF, "negative")["summary"]
    assert s["f1_micro_14"] == pytest.approx(6 / 9)  # tp 3, fp 1, fn 2
    assert s["f1_micro_5"] == pytest.approx(4 / 6)  # tp 2, fp 1, fn 1


def test_resampled_counts_are_weighted_studies():
    pred, ref = binarize(PRED), binarize(REF)
    weights = np.array([[1, 1, 1, 1], [2, 0, 0, 1]], dtype=float)  # all once; A twice and D once
    s = summary_scores(confusion_counts(pred, ref, weights))
    assert s["f1_micro_14"][0] == pytest.approx(6 / 10)
    # A twice: Cardiomegaly tp 2, Edema fp 2; D: No Finding tp 1 -> tp 3, fp 2, fn 0
    assert s["f1_micro_14"][1] == pytest.approx(6 / 8)
    assert s["f1_micro_5"][1] == pytest.approx(4 / 6)


def test_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    pred, ref = binarize(PRED), binarize(REF)
    s = label_f1(PRED, REF)["summary"]
    assert s["f1_micro_14"] == pytest.approx(metrics.f1_score(ref, pred, average="micro", zero_division=0))
    assert s["f1_macro_14"] == pytest.approx(metrics.f1_score(ref, pred, average="macro", zero_division=0))


def test_interval_of_identical_resamples_is_the_point():
    out = label_f1(PRED, REF, weights=np.ones((5, 4)))
    assert out["ci95"]["f1_micro_14"] == pytest.approx([0.6, 0.6])
    assert out["ci95"]["per_observation"]["No Finding"]["f1"] == pytest.approx([2 / 3, 2 / 3])


def test_bad_uncertain_choice_is_an_input_error():
    with pytest.raises(clinical.InputError, match="uncertain"):
        clinical_scores(["a"], ["b"], uncertain="maybe")


# --------------------------------------------------------------------------------------------------
# In the scorer


RECORDS = [
    {"id": "1", "study_id": "1", "prediction": "Findings: Mild cardiomegaly. Impression: No effusion.",
     "reference": "Findings: Cardiomegaly. Small left pleural effusion. Impression: Cardiomegaly."},
    {"id": "2", "study_id": "2", "prediction": "Findings: Heart size is normal. Impression: Normal chest.",
     "reference": "Findings: The heart size is normal. Impression: No acute disease."},
    {"id": "3", "study_id": "3", "prediction": "Findings: Possible left basilar atelectasis. Impression: No pneumothorax.",
     "reference": ["Findings: No pneumothorax. Impression: Left basilar atelectasis.", "Findings: other."]},
]  # fmt: skip


@pytest.fixture(scope="module")
def meteor():
    with MeteorScorer() as scorer:
        yield scorer


@pytest.mark.slow
def test_score_records_adds_the_clinical_block_with_the_same_resamples(meteor):
    card = score_records(RECORDS, bootstrap=30, seed=4, meteor=meteor)
    block = card["clinical"]
    preds = label_reports([r["prediction"] for r in RECORDS])
    refs = label_reports(
        [r["reference"] if isinstance(r["reference"], str) else r["reference"][0] for r in RECORDS]
    )
    expected = label_f1(preds, refs, "positive", resample_weights(3, 30, 4))
    assert block["summary"] == expected["summary"] and block["ci95"] == expected["ci95"]
    assert block["labeler"] == "offline" and block["uncertain"] == "positive" and block["studies"] == 3
    # study 1: Cardiomegaly tp, Effusion fn; study 2: No Finding tp; study 3: Atelectasis tp (uncertain)
    assert block["per_observation"]["Cardiomegaly"]["tp"] == 1
    assert block["per_observation"]["Pleural Effusion"]["fn"] == 1
    assert block["per_observation"]["Atelectasis"]["tp"] == 1


@pytest.mark.slow
def test_score_records_labeler_none_has_no_block(meteor):
    assert "clinical" not in score_records(RECORDS[:2], labeler="none", meteor=meteor)


def _score_script():
    from rrg.score import command as score
    return score


@pytest.mark.slow
def test_score_cli_writes_clinical_by_default_and_labeler_none_turns_it_off(tmp_path, capsys):
    score = _score_script()
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    score.main([str(path), "--out", str(tmp_path / "a.json"), "--uncertain", "negative"])
    card = json.loads((tmp_path / "a.json").read_text())
    assert card["clinical"]["uncertain"] == "negative"
    assert card["clinical"]["per_observation"]["Atelectasis"]["fn"] == 1  # study 3's "possible" atelectasis
    assert "f1_micro_14" in capsys.readouterr().out
    score.main([str(path), "--out", str(tmp_path / "b.json"), "--labeler", "none"])
    assert "clinical" not in json.loads((tmp_path / "b.json").read_text())
    assert "f1_micro_14" not in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Image-control delta


def test_clinical_figures_join_the_image_control_delta():
    real = {"metrics": {"report": {"BLEU-4": 0.2}}, "clinical": label_f1(PRED, REF)}
    control = {"metrics": {"report": {"BLEU-4": 0.1}}, "clinical": label_f1(PRED, REF, "negative")}
    real_table = {**real["metrics"], **delta_table(real)}
    control_table = {**control["metrics"], **delta_table(control)}
    delta = metric_delta(real_table, control_table)
    assert delta["clinical"]["f1_micro_14"] == pytest.approx(6 / 10 - 6 / 9)
    assert delta["report"]["BLEU-4"] == pytest.approx(0.1)
    text = format_delta("blank", real_table, control_table, delta)
    assert "clinical delta" in text and "f1_micro_14" in text
    assert delta_table({"metrics": {}}) == {}


# --------------------------------------------------------------------------------------------------
# Optional backends: one line saying what is missing and how to get it


def test_chexbert_package_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "f1chexbert", None)  # import fails as if not installed
    with pytest.raises(BackendUnavailable) as error:
        clinical_scores(["No effusion."], ["Effusion."], labeler="chexbert")
    message = str(error.value)
    assert "\n" not in message and "f1chexbert" in message and "requirements-clinical.txt" in message


def test_radgraph_package_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "radgraph", None)
    with pytest.raises(BackendUnavailable, match="pip install -r requirements-clinical.txt"):
        clinical_scores(["No effusion."], ["Effusion."], labeler="none", radgraph=True)


def test_weights_not_downloadable_is_one_line(monkeypatch):
    class Offline:
        def __init__(self, *args, **kwargs):
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck it.")

    monkeypatch.setitem(sys.modules, "f1chexbert", types.SimpleNamespace(F1CheXbert=Offline))
    monkeypatch.setitem(sys.modules, "radgraph", types.SimpleNamespace(F1RadGraph=Offline))
    for kwargs, names in (
        ({"labeler": "chexbert"}, "chexbert.pth"),
        ({"labeler": "none", "radgraph": True}, "radgraph.tar.gz"),
    ):
        with pytest.raises(BackendUnavailable) as error:
            clinical_scores(["No effusion."], ["Effusion."], **kwargs)
        message = str(error.value)
        assert "\n" not in message and names in message and "Hugging Face Hub" in message
        assert "couldn't connect" in message  # the package's own reason, on the same line


def test_real_chexbert_package_offline_stops_with_the_line(monkeypatch):
    pytest.importorskip("f1chexbert", reason="f1chexbert is not installed (requirements-clinical.txt)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendUnavailable, match="could not load its model"):
        clinical.chexbert_labels(["No effusion."])


@pytest.mark.slow
def test_cli_backend_error_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "f1chexbert", None)
    score = _score_script()
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        score.main([str(path), "--labeler", "chexbert"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "requirements-clinical.txt" in err


# --------------------------------------------------------------------------------------------------
# Tables, figures and the card reader


def _card(path: Path, control: bool = False, clinical: bool = True) -> Path:
    metrics = {"report": {"BLEU-1": 0.4, "BLEU-4": 0.1, "METEOR": 0.2, "ROUGE-L": 0.3, "CIDEr": 0.5}}
    card = {"metrics": metrics, "counts": {"lines": 4}, "settings": {"normalize": True}}
    if clinical:
        card["clinical"] = {"labeler": "offline", "uncertain": "positive", "studies": 4,
                            **label_f1(PRED, REF, weights=resample_weights(4, 50, 0))}  # fmt: skip
    if control:
        delta = {"report": {"BLEU-4": 0.05}, "clinical": dict.fromkeys(("f1_micro_14", "f1_macro_14"), 0.2)}
        card["image_control"] = {"condition": "shuffle", "metrics": metrics, "delta": delta}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card))
    return path


@pytest.mark.slow
def test_make_tables_has_the_clinical_columns(tmp_path):
    card = _card(tmp_path / "results/r2gen/lora/scores.json")
    out = tmp_path / "table"
    tables.main(["--runs", f"{card}:Ours", "--out", str(out)])
    md = (out / "table.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Group"))
    # every F1 column names its labeler; no card has RadGraph, so no RadGraph column
    offline = "CheXpert rules (offline)"
    assert header.endswith(f"| F1-14 micro, {offline} | F1-5 micro, {offline} | F1 micro without No Finding, {offline} |")
    ours = next(line for line in md.splitlines() if "| Ours |" in line)
    assert ours.split(" | ")[-3].startswith("0.600 [")  # F1-14 6/10
    assert ours.split(" | ")[-2].startswith("0.571 [")  # F1-5 4/7
    r2gen = next(line for line in md.splitlines() if "| R2Gen |" in line)
    assert r2gen.endswith("| – | – | – |")


@pytest.mark.slow
def test_clinical_figure_with_control_delta(tmp_path, capsys):
    from PIL import Image

    a = _card(tmp_path / "results/a/scores.json", control=True)
    b = _card(tmp_path / "results/b/scores.json")
    plot = metrics_figure
    plot.main([str(a), str(b), "--out", str(tmp_path / "m.png")])
    image = Image.open(tmp_path / "m_clinical.png")
    assert image.format == "PNG" and image.width > 1000
    assert "m_clinical.png" in capsys.readouterr().out

    no_clinical = _card(tmp_path / "results/c/scores.json", clinical=False)
    plot.main([str(no_clinical), "--out", str(tmp_path / "c.png")])
    assert not (tmp_path / "c_clinical.png").exists()
    with pytest.raises(SystemExit) as exit_info:
        plot.main(
            [str(no_clinical), "--out", str(tmp_path / "c.png"), "--clinical_out", str(tmp_path / "x.png")]
        )
    assert exit_info.value.code == 1 and "clinical" in capsys.readouterr().err


def test_score_card_reads_and_checks_the_clinical_block(tmp_path):
    from rrg.io import InputError as ReaderError
    from rrg.report.results import clinical_value, load_scores

    card = load_scores(_card(tmp_path / "results/a/scores.json"))
    value, bounds = clinical_value(card, "f1_micro_14")
    assert value == pytest.approx(0.6) and len(bounds) == 2
    assert clinical_value(card, "radgraph_partial") == (None, None)
    bad = json.loads((tmp_path / "results/a/scores.json").read_text())
    bad["clinical"]["summary"]["f1_micro_5"] = "high"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ReaderError, match="f1_micro_5"):
        load_scores(tmp_path / "bad.json")
