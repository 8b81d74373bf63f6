"""Score cards record the split they were scored on, and tables show it instead of "unknown split"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrg.data.split_record import split_of_records, split_record
from rrg.io import InputError
from rrg.report.results import R2GEN_SPLIT, UNKNOWN_SPLIT, infer_split_label, load_scores

REPO = Path(__file__).resolve().parents[2]


def _split_folder(root: Path, protocol: str | None) -> Path:
    root.mkdir(parents=True)
    (root / "test_report.json").write_text("[]")
    if protocol:
        (root / "leak_audit.json").write_text(json.dumps({"protocol": protocol}))
    return root / "test_report.json"


def test_split_record_reads_the_protocol_beside_the_split_file(tmp_path):
    path = _split_folder(tmp_path / "clean", "clean")
    assert split_record(path) == {"file": str(path), "name": "test", "protocol": "clean"}
    assert split_record(_split_folder(tmp_path / "bare", None))["protocol"] is None  # never guessed


def test_lines_of_two_splits_are_refused_naming_the_line():
    a, b = {"name": "test", "protocol": "clean"}, {"name": "test", "protocol": "r2gen"}
    records = [{"split": a, "_where": "p.jsonl:1"}, {"split": b, "_where": "p.jsonl:2"}]
    with pytest.raises(InputError, match=r"p\.jsonl:2.*p\.jsonl:1"):
        split_of_records(records)
    assert split_of_records([{"_where": "p.jsonl:1"}]) is None
    assert split_of_records([{"split": a}, {"split": a}]) == a


def _card(tmp_path: Path, split: dict | None) -> Path:
    settings = {"normalize": True, "per_image": False, **({"split": split} if split else {})}
    path = tmp_path / "somewhere" / "card.json"  # no split in the path
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"metrics": {"report": {"BLEU-4": 0.1}}, "settings": settings}))
    return path


@pytest.mark.parametrize(
    ("protocol", "label"), [("clean", "clean (test)"), ("r2gen", R2GEN_SPLIT), (None, UNKNOWN_SPLIT)]
)
def test_make_tables_shows_the_recorded_split(tmp_path, protocol, label):
    split = {"file": "x/test_report.json", "name": "test", "protocol": protocol} if protocol else None
    card = load_scores(_card(tmp_path, split))
    assert infer_split_label(card) == label
    from rrg.report import tables

    config = tables.TableConfig(runs=[str(card.path)], out=str(tmp_path / "t"))
    rows = tables.rows_for_card(card, tables.parse_run_spec(str(card.path)), config)
    assert {row["Split"] for row in rows} == {label}


@pytest.mark.slow
def test_score_py_records_the_lines_split_in_the_card(tmp_path, monkeypatch):
    from rrg.score import command as score

    split = split_record(_split_folder(tmp_path / "r2gen", "r2gen"))
    preds = tmp_path / "preds.jsonl"
    line = {"id": "1", "prediction": "no effusion", "reference": "no effusion", "split": split}
    preds.write_text(json.dumps(line) + "\n")
    monkeypatch.setattr(score, "score_records", lambda records, **kw: {"metrics": {}, "settings": {}})
    monkeypatch.setattr(score, "format_card", lambda card: "")
    card = score.main([str(preds), "--out", str(tmp_path / "card.json"), "--labeler", "none"])
    assert card["settings"]["split"] == split
    assert json.loads((tmp_path / "card.json").read_text())["settings"]["split"]["protocol"] == "r2gen"
