"""report2json --regions: region-structured targets from the classifier or from a WangLab-format file."""

from __future__ import annotations

import json

import pytest

from rrg.data.iu_xray import build_reports_table
from rrg.data.protocols import SplitConfig, build_split
from rrg.data.regions import parse_regions
from rrg.model.prompts import REGION_QUESTION
from tests.helpers import make_kaggle_dir, shared_path


@pytest.fixture(scope="module")
def table(tmp_path_factory, iu_xray_dir):
    return build_reports_table(make_kaggle_dir(tmp_path_factory.mktemp("kaggle") / "iu_xray", iu_xray_dir))


@pytest.mark.slow
def test_classifier_targets_hold_every_findings_sentence(table):
    config = SplitConfig(regions="classifier", fractions=(0.98, 0.01, 0.01))
    entry = build_split("clean", table, config)["val"][0]
    assert entry.prompt == REGION_QUESTION
    regions = parse_regions(entry.response.split("\nImpression:")[0])
    assert entry.response.endswith(f"Impression: {entry.impression}")
    joined = " ".join(regions.values())
    assert all(sentence.strip(" .") in joined for sentence in entry.findings.split(". "))
    assert config.notes["regions_from_classifier"] > 0


@pytest.mark.slow
def test_region_file_wins_where_it_has_the_study(table, tmp_path):
    wanglab = json.loads(shared_path("wanglab", "region_annotations_trainval.json").read_text())
    item = wanglab["val"][0]
    path = tmp_path / "regions.json"
    path.write_text(json.dumps({"val": [item]}))
    config = SplitConfig(
        regions=str(path), r2gen_annotation=str(shared_path("iu_xray", "r2gen_annotation.json"))
    )
    val = build_split("r2gen", table, config)["val"]
    uid = item["id"][3:].split("_")[0]
    entry = next(e for e in val if e.study_id == uid)
    assert parse_regions(entry.response.split("\nImpression:")[0]) == item["report"]
    assert config.notes["regions_from_file"] == 1
    assert config.notes["regions_from_classifier"] == len(val) + 2069 + 590 - 1


@pytest.mark.slow
def test_report2json_refuses_regions_with_reference_protocol(capsys):
    from rrg.data.report2json import main

    with pytest.raises(SystemExit):
        main(["--protocol", "reference", "--regions", "classifier"])
    assert "--regions rewrites the targets" in capsys.readouterr().err
