"""rrg.data.iu_xray / data/report2json.py / plot/dataset.py on the real IU X-Ray CSVs with a synthetic image folder."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from rrg.data.entries import load_entries
from rrg.data.iu_xray import build_reports_table, clean_text, read_reference_table, read_reports
from rrg.data.leak_audit import leak_audit
from rrg.data.protocols import SplitConfig, build_split
from rrg.io import InputError
from rrg.model.prompts import REFERENCE_PROMPT_PREFIX, REPORT_QUESTION
from tests.helpers import make_kaggle_dir, shared_path

# Excel turned these studies' indications into "#NAME?" in the Kaggle CSV; report.csv has the text.
EXCEL_DAMAGED_UIDS = {"1555", "3477", "3784"}


@pytest.fixture(scope="module")
def kaggle_dir(tmp_path_factory, iu_xray_dir):
    return make_kaggle_dir(tmp_path_factory.mktemp("kaggle") / "iu_xray", iu_xray_dir)


@pytest.fixture(scope="module")
def table(kaggle_dir):
    return build_reports_table(kaggle_dir)


@pytest.fixture(scope="module")
def r2gen_annotation():
    return shared_path("iu_xray", "r2gen_annotation.json")


def reference_script_entries(report_csv) -> dict[str, list[dict]]:
    """The reference's logic, re-implemented from its description, on its report.csv."""
    df = pd.read_csv(report_csv).sample(frac=1, random_state=42)
    n_train = int(0.8 * len(df))
    out = {}
    for name, part in (("train", df[:n_train]), ("test", df[n_train:])):
        entries = []
        for _, row in part.iterrows():
            image_path = row["image_files"].split(";")
            prompt = REFERENCE_PROMPT_PREFIX + row["Problems"] + str(row["indication"])
            response = f"Findings: {row['findings']} Impression: {row['impression']}"
            entry1 = {
                "prompt": prompt,
                "input_image": "./images/images_normalized/" + image_path[0],
                "response": response,
            }
            if len(image_path) > 1:
                entries.append({**entry1, "input_image": "./images/images_normalized/" + image_path[1]})
            entries.append(entry1)
        out[name] = entries
    return out


def three_fields(entries) -> list[dict]:
    return [{k: e.to_json()[k] for k in ("prompt", "input_image", "response")} for e in entries]


def test_table_lists_folder_images_like_report_csv(table, iu_xray_dir):
    reference = pd.read_csv(iu_xray_dir / "report.csv").set_index("uid")["image_files"]
    ours = table.set_index("uid")["image_files"]
    assert len(table) == 3851
    assert all(ours[uid] == files for uid, files in reference.items())
    assert table.set_index("uid")["views"][2084] == "Frontal;Unknown;Unknown;Lateral"


def test_reference_protocol_from_report_csv_is_exact(kaggle_dir, iu_xray_dir):
    report_csv = iu_xray_dir / "report.csv"
    splits = build_split("reference", read_reference_table(report_csv, kaggle_dir))
    expected = reference_script_entries(report_csv)
    assert set(splits) == {"train", "test"}
    assert len({e.study_id for e in splits["train"]}) == 2664
    assert len({e.study_id for e in splits["test"]}) == 667
    assert [len(splits["train"]), len(splits["test"])] == [5029, 1251]
    for name in ("train", "test"):
        assert three_fields(splits[name]) == expected[name]


def test_reference_protocol_from_kaggle_csvs(table, iu_xray_dir):
    splits = build_split("reference", table)
    expected = reference_script_entries(iu_xray_dir / "report.csv")
    for name in ("train", "test"):
        ours = splits[name]
        assert len(ours) == len(expected[name])
        for entry, want in zip(ours, expected[name]):
            got = entry.to_json()
            assert (got["input_image"], got["response"]) == (want["input_image"], want["response"])
            if entry.study_id in EXCEL_DAMAGED_UIDS:
                assert got["prompt"].endswith("#NAME?")  # the Kaggle CSV's text, kept verbatim
            else:
                assert got["prompt"] == want["prompt"]
            assert got["id"].startswith(entry.study_id + "_") and got["images"] == [
                want["input_image"].split("/")[-1]
            ]
    # NaN indication renders "nan" in this protocol only (reproduced on purpose)
    assert any(e.prompt.endswith("nan") and e.indication is None for e in splits["train"] + splits["test"])


def test_audit_flags_reference_problems_leak(table):
    splits = build_split("reference", table)
    audit = leak_audit(splits, table)
    assert audit["label_leak"] is True
    assert audit["label_fields_in_prompts"]["train"]["Problems_in_prompt"] == len(splits["train"])
    assert audit["splits"]["train"]["studies"] == 2664
    assert audit["table"]["with_findings_and_impression"] == 3331


def test_r2gen_split_counts_and_mapping(table, r2gen_annotation):
    config = SplitConfig(r2gen_annotation=str(r2gen_annotation))
    splits = build_split("r2gen", table, config)
    assert {n: len(v) for n, v in splits.items()} == {"train": 2069, "val": 296, "test": 590}
    coverage = config.notes["r2gen_mapping"]
    assert all(c["mapped"] == c["annotated"] and not c["unmapped"] for c in coverage.values())
    annotated = json.loads(r2gen_annotation.read_text())
    assert splits["test"][0].study_id == annotated["test"][0]["id"][3:].split("_")[0]
    assert all(e.prompt == REPORT_QUESTION for e in splits["train"])


def test_r2gen_reports_unmapped_ids(table, r2gen_annotation, tmp_path):
    annotated = json.loads(r2gen_annotation.read_text())
    annotated["test"].append({"id": "CXR99999_IM-0000", "report": "x", "image_path": [], "split": "test"})
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(annotated))
    config = SplitConfig(r2gen_annotation=str(path))
    splits = build_split("r2gen", table, config)
    assert len(splits["test"]) == 590
    assert config.notes["r2gen_mapping"]["test"]["unmapped"] == ["99999"]


def test_clean_split_is_study_level_and_label_free(table):
    config = SplitConfig(seed=7, views="both", indication=True)
    splits = build_split("clean", table, config)
    owners = [e.study_id for entries in splits.values() for e in entries]
    assert len(owners) == len(set(owners)) == 3331  # studies need findings AND impression
    assert config.notes["skipped_without_findings_and_impression"] == 3851 - 3331
    problems = table.set_index("uid")["Problems"].astype(str)
    for entries in splits.values():
        for e in entries:
            assert e.prompt.startswith(REPORT_QUESTION)
            assert problems[int(e.study_id)] not in e.prompt.replace(e.indication or "", "")
            assert "nan" not in e.prompt.split() and e.indication != "nan"
            assert e.response == f"Findings: {e.findings} Impression: {e.impression}"
    audit = leak_audit(splits, table)
    assert audit["label_leak"] is False and audit["studies_in_several_splits"]["count"] == 0
    sizes = [len(splits[n]) for n in ("train", "val", "test")]
    assert sizes == [round(0.7 * 3331), round(0.1 * 3331), 3331 - round(0.7 * 3331) - round(0.1 * 3331)]
    again = build_split("clean", table, SplitConfig(seed=7, views="both", indication=True))
    other = build_split("clean", table, SplitConfig(seed=8))
    assert [e.id for e in again["test"]] == [e.id for e in splits["test"]]
    assert [e.id for e in other["test"]] != [e.id for e in splits["test"]]


def test_clean_views_and_missing_indication(table):
    frontal = build_split("clean", table, SplitConfig(indication=True))
    both = build_split("clean", table, SplitConfig(views="both"))
    all_frontal = [e for entries in frontal.values() for e in entries]
    assert all(len(e.images) == 1 for e in all_frontal)
    assert sum(e.views == ["Frontal"] for e in all_frontal) == 3331 - 138  # 138 studies have no frontal view
    assert any(e.views == ["Frontal", "Lateral"] for e in both["train"])
    no_indication = [e for e in all_frontal if e.indication is None]
    assert no_indication and all(e.prompt == REPORT_QUESTION for e in no_indication)
    damaged = [e for e in all_frontal if e.study_id in EXCEL_DAMAGED_UIDS]
    assert damaged and all(e.indication is None and "#NAME?" not in e.prompt for e in damaged)


def test_text_cleaning():
    assert clean_text(float("nan")) is None and clean_text("  ") is None
    assert clean_text(" a \n b  XXXX ") == "a b XXXX"
    assert clean_text("no XXXX seen", xxxx="[redacted]") == "no [redacted] seen"


def test_xxxx_replacement_flag(table):
    splits = build_split("clean", table, SplitConfig(xxxx="_"))
    assert not any("XXXX" in e.response for entries in splits.values() for e in entries)


def test_missing_column_names_file_and_column(tmp_path, iu_xray_dir):
    path = tmp_path / "indiana_reports.csv"
    pd.read_csv(iu_xray_dir / "indiana_reports.csv").drop(columns=["findings"]).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"indiana_reports\.csv.*'findings'"):
        read_reports(path)


def test_unreadable_csv_names_file(tmp_path):
    path = tmp_path / "indiana_reports.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"indiana_reports\.csv: unreadable CSV"):
        read_reports(path)


@pytest.mark.slow
def test_study_without_images_errors_or_counted_skip(tmp_path, iu_xray_dir):
    missing = {"1_IM-0001-3001.dcm.png", "1_IM-0001-4001.dcm.png"}
    folder = make_kaggle_dir(tmp_path / "iu", iu_xray_dir, drop=missing)
    with pytest.raises(InputError, match=r"indiana_projections\.csv: field 'filename'"):
        build_reports_table(folder)
    notes: dict = {}
    table = build_reports_table(folder, skip_missing=True, notes=notes)
    assert 1 not in set(table["uid"]) and len(table) == 3850
    assert notes == {"skipped_missing_images": 2, "skipped_studies_without_images": 1}


@pytest.mark.slow
def test_report2json_cli_and_plot(kaggle_dir, tmp_path, iu_xray_dir):
    from rrg.data.report2json import main as report2json
    from rrg.report.dataset_figure import main as plot_dataset

    out = tmp_path / "out"
    out.mkdir()
    (out / "val_report.json").write_text("[]")  # left by an earlier clean run: must not survive
    assert report2json(["--protocol", "reference", "--data_dir", str(kaggle_dir), "--out", str(out)]) == 0
    assert not (out / "val_report.json").exists()
    train = load_entries(out / "train_report.json")
    assert len(train) == 5029
    raw = json.loads((out / "train_report.json").read_text())[0]
    assert {
        "id",
        "study_id",
        "images",
        "views",
        "prompt",
        "input_image",
        "response",
        "findings",
        "impression",
    } <= set(raw)
    assert json.loads((out / "leak_audit.json").read_text())["label_leak"] is True
    reports = pd.read_csv(out / "reports.csv")
    assert {"uid", "image_files", "views", "findings", "impression", "indication", "Problems", "MeSH"} <= set(
        reports
    )
    figure = tmp_path / "dataset.png"
    assert plot_dataset(["--data_dir", str(out), "--out", str(figure)]) == 0
    assert Image.open(figure).size[0] > 1000
