"""--views frontal on studies without a frontal image: the lateral used instead is counted per split in
the leak audit and printed at the end of data/report2json.py, never silent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrg.data.entries import Entry
from rrg.data.leak_audit import format_audit
from rrg.data.protocols import split_counts

REPO = Path(__file__).resolve().parents[2]


def entry(study: str, views: list[str]) -> Entry:
    return Entry(id=study, study_id=study, images=[f"{study}.png"], prompt="p", response="r", views=views)


def test_split_counts_studies_without_frontal():
    entries = [entry("1", ["Frontal"]), entry("2", ["Lateral"]), entry("3", []), entry("4", ["Lateral"])]
    assert split_counts(entries)["studies_without_frontal"] == 2  # "3" has no view labels: not counted


def report2json():
    from rrg.data import report2json

    return report2json


@pytest.mark.slow
def test_report2json_says_which_studies_use_a_lateral(iu_xray_dir, tmp_path, capsys):
    args = ["--protocol", "clean", "--data_dir", str(iu_xray_dir), "--images_from_csv", "--out", str(tmp_path)]
    assert report2json().main(args) == 0
    out = capsys.readouterr().out
    audit = json.loads((tmp_path / "leak_audit.json").read_text())
    per_split = {name: c["studies_without_frontal"] for name, c in audit["splits"].items()}
    assert sum(per_split.values()) == audit["notes"]["no_frontal_used_first_image"] > 0
    assert f"note: --views frontal: {sum(per_split.values())} studies" in out
    assert f"train {per_split['train']}" in out
    assert f"{per_split['train']} train studies have no frontal image" in format_audit(audit)
