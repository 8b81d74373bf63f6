"""The rexrank protocol's split files, ReXrank's other boards, and the submission file."""

from __future__ import annotations

import json

import pytest

from rrg.data.rexrank import board_entries, build_submission, kaggle_image, read_rexrank
from rrg.io import InputError
from tests.helpers import shared_path


def _splits(tmp_path, iu_xray_dir, *flags):
    from rrg.data.report2json import main

    rexrank = shared_path("rexrank", "ReXRank_IUXray_test.json").parent
    out = tmp_path / "splits"
    main(
        [
            "--protocol", "rexrank", "--rexrank_dir", str(rexrank), "--data_dir", str(iu_xray_dir),
            "--r2gen_annotation", str(shared_path("iu_xray", "r2gen_annotation.json")),
            "--images_from_csv", "--out", str(out), *flags,
        ]
    )  # fmt: skip
    return {n: json.loads((out / f"{n}_report.json").read_text()) for n in ("train", "val", "test")}


@pytest.fixture(scope="module")
def findings_splits(tmp_path_factory, iu_xray_dir):
    return _splits(tmp_path_factory.mktemp("findings"), iu_xray_dir)


def test_split_sizes_and_references_are_rexranks(findings_splits):
    test = read_rexrank(shared_path("rexrank", "ReXRank_IUXray_test.json"))
    assert [len(findings_splits[n]) for n in ("train", "val", "test")] == [2069, 296, 590]
    assert [e["id"] for e in findings_splits["test"]] == list(test)
    first = findings_splits["test"][0]
    assert first["response"] == " ".join(test[first["id"]]["section_findings"].split())
    assert "Impression" not in first["prompt"] and "Indication" not in first["prompt"]
    train_ids = {e["study_id"] for e in findings_splits["train"]}
    assert not train_ids & {e["study_id"] for e in findings_splits["test"] + findings_splits["val"]}


@pytest.mark.slow
def test_findings_impression_board_and_context(tmp_path, iu_xray_dir):
    splits = _splits(tmp_path, iu_xray_dir, "--board", "findings_impression", "--context")
    entry = next(e for e in splits["test"] if e["id"] == "CXR3030_IM-1405")
    assert entry["response"].startswith("Findings: Normal cardiomediastinal silhouette.")
    assert " Impression: There is no radiographic evidence" in entry["response"]
    assert entry["prompt"].endswith("Indication: Chest pain, dyspnea Comparison: None.")
    assert all("Indication:" in e["prompt"] for e in splits["train"][:50] if e["indication"])


def test_r2gen_paths_resolve_to_kaggle_files(findings_splits):
    entry = next(e for e in findings_splits["test"] if e["id"] == "CXR3030_IM-1405")
    assert entry["images"] == ["3030_IM-1405-3001.dcm.png"]  # the frontal one (0.png)
    files = {"3646": ["3646_IM-1808-0001-0002.dcm.png", "3646_IM-1808-0001-0001.dcm.png"]}
    assert kaggle_image("CXR3646_IM-1808-0001/1.png", files, "x") == "3646_IM-1808-0001-0002.dcm.png"
    with pytest.raises(InputError, match="has 2 image"):
        kaggle_image("CXR3646_IM-1808-0001/2.png", files, "x")


def test_mimic_and_chexpert_plus_boards_load(tmp_path):
    mimic = board_entries(
        shared_path("rexrank", "ReXRank_MIMICCXR_test.json"), None, board="findings", context=True
    )
    assert len(mimic) > 2000 and all(not e.images[0].startswith("/") for e in mimic)
    assert "<context>" not in mimic[0].prompt
    chexpert = board_entries(
        shared_path("rexrank", "ReXRank_CheXpertPlus.json"), None, board="findings_impression", context=False
    )
    assert chexpert and all(e.response for e in chexpert)
    root = tmp_path / "images"
    first = chexpert[0].images[0]
    (root / first).parent.mkdir(parents=True)
    (root / first).write_bytes(b"x")
    with pytest.raises(InputError, match=r"image\(s\) not under"):  # the other studies' images are absent
        board_entries(
            shared_path("rexrank", "ReXRank_CheXpertPlus.json"),
            root,
            board="findings_impression",
            context=False,
        )


def _predictions(test: dict) -> list[dict]:
    return [{"id": k, "prediction": f"Findings: pred {k}. Impression: ok."} for k in test]


@pytest.mark.slow
def test_submission_round_trips_exactly(tmp_path):
    from rrg.data.rexrank_submission import main

    test_path = shared_path("rexrank", "ReXRank_IUXray_test.json")
    test = json.loads(test_path.read_text())
    preds = tmp_path / "predictions.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in _predictions(test)))
    out = tmp_path / "submission.json"
    main(["--predictions", str(preds), "--test_json", str(test_path), "--out", str(out)])
    submission = json.loads(out.read_text())
    assert list(submission) == list(test)
    for key, entry in submission.items():
        assert list(entry) == [*test[key], "model_prediction"]
        assert {k: v for k, v in entry.items() if k != "model_prediction"} == test[key]
        assert entry["model_prediction"] == f"Findings: pred {key}. Impression: ok."


def test_submission_has_the_example_layout():
    """ReXrank's example prediction.json (MIMIC-CXR) is its test entries plus model_prediction; the example
    predates the test file's `report` field and its context without <context> tags."""
    example = json.loads(shared_path("rexrank", "prediction.json").read_text())
    test = read_rexrank(shared_path("rexrank", "ReXRank_MIMICCXR_test.json"))
    test = {k: test[k] for k in example}
    preds = [{"id": k, "prediction": v["model_prediction"]} for k, v in example.items()]
    ours = build_submission(test, preds, source="p")
    for key, theirs in example.items():
        mine = {k: v for k, v in ours[key].items() if k != "report"}
        assert list(mine) == list(theirs)
        theirs = {**theirs, "context": theirs["context"].removeprefix("<context>").removesuffix("</context>")}
        assert mine == theirs


def test_submission_refuses_missing_extra_and_repeated_studies():
    test = {"A": {"image_path": ["a"]}, "B": {"image_path": ["b"]}}
    with pytest.raises(InputError, match=r"1 study\(ies\) missing \['B'\], 1 not in it \['C'\]"):
        build_submission(test, [{"id": "A", "prediction": "x"}, {"id": "C", "prediction": "y"}], source="p")
    with pytest.raises(InputError, match="more than once"):
        build_submission(
            test, [{"id": "A", "prediction": "x"}] * 2 + [{"id": "B", "prediction": "x"}], source="p"
        )


def test_findings_section_of_a_prediction_for_the_findings_board():
    test = {"A": {"image_path": ["a"]}}
    out = build_submission(
        test,
        [{"id": "A", "prediction": "Findings: clear. Impression: fine."}],
        source="p",
        section="findings",
    )
    assert out["A"]["model_prediction"] == "clear."


@pytest.mark.slow
def test_table_sets_the_leaderboard_rows_beside_ours(tmp_path):
    from rrg.report import tables as make_tables

    card = tmp_path / "results" / "rexrank" / "constant.scores.json"
    card.parent.mkdir(parents=True)
    card.write_text(
        json.dumps(
            {
                "metrics": {
                    "report": {"BLEU-1": 0.3, "BLEU-4": 0.1, "METEOR": 0.1, "ROUGE-L": 0.3, "CIDEr": 0.2}
                },
                "rexrank_bleu": {"bleu2": 0.161, "ci95": [0.15, 0.17]},
            }
        )
    )
    csv = shared_path("rexrank", "findings_result_iu_xray.csv")
    out = tmp_path / "table"
    make_tables.main(["--runs", f"{card}:constant", "--rexrank_csv", str(csv), "--out", str(out)])
    lines = (out / "table.md").read_text().splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| Group")).split("|")]
    medgemma = [c.strip() for c in next(line for line in lines if "| MedGemma |" in line).split("|")]
    ours = [c.strip() for c in next(line for line in lines if "| constant |" in line).split("|")]
    assert medgemma[header.index("Group")] == "ReXrank leaderboard (other model family)"
    assert medgemma[header.index("ReXrank BLEU-2")] == "0.217" and medgemma[header.index("GREEN")] == "0.724"
    assert ours[header.index("ReXrank BLEU-2")].startswith("0.161 [") and ours[header.index("GREEN")] == "–"
