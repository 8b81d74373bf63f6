"""Context in the prompt: the comparison beside the indication, one template, recorded, leak-guarded."""

from __future__ import annotations

import dataclasses

import pytest

from rrg.data.entries import entry_from_record
from rrg.data.iu_xray import build_reports_table, holds_report_text
from rrg.data.leak_audit import leak_audit
from rrg.data.protocols import SplitConfig, build_split
from rrg.model.prompts import REPORT_QUESTION, context_text, report_question
from tests.helpers import make_kaggle_dir


@pytest.fixture(scope="module")
def table(tmp_path_factory, iu_xray_dir):
    return build_reports_table(make_kaggle_dir(tmp_path_factory.mktemp("kaggle") / "iu_xray", iu_xray_dir))


def test_one_template():
    assert report_question() == REPORT_QUESTION
    assert report_question("Cough.") == f"{REPORT_QUESTION} Indication: Cough."  # as before
    assert report_question("Cough.", "None.") == f"{REPORT_QUESTION} Indication: Cough. Comparison: None."
    assert (
        context_text(None, "Prior film.", "Lungs clear.")
        == "Comparison: Prior film. Prior report: Lungs clear."
    )


def test_comparison_in_prompt_and_entry(table):
    config = SplitConfig(comparison=True, indication=True)
    entries = [e for split in build_split("clean", table, config).values() for e in split]
    with_comparison = [e for e in entries if e.comparison]
    assert len(with_comparison) > 1000
    e = with_comparison[0]
    assert e.prompt == report_question(e.indication, e.comparison)
    assert e.to_json()["comparison"] == e.comparison and e.to_json()["prior_report"] is None
    again = entry_from_record(e.to_json(), "f.json: entry 1", 0)
    assert again.comparison == e.comparison
    plain = build_split("clean", table, SplitConfig())["train"]
    assert all(x.comparison is None and "Comparison:" not in x.prompt for x in plain)


def test_a_comparison_quoting_the_report_is_dropped_and_counted(table):
    row = table[table["findings"].notna() & table["impression"].notna()].index[0]
    forged = table.copy()
    findings = str(forged.at[row, "findings"])
    forged.at[row, "comparison"] = f"Prior study: {findings}"
    config = SplitConfig(comparison=True)
    splits = build_split("clean", forged, config)
    uid = str(forged.at[row, "uid"])
    entry = next(e for s in splits.values() for e in s if e.study_id == uid)
    assert entry.comparison is None and "Comparison:" not in entry.prompt
    assert config.notes["comparison_dropped_report_text"] >= 1
    assert all(v == 0 for v in leak_audit(splits, forged)["report_text_in_prompts"].values())
    # The audit catches a prompt that holds report text however it got there.
    leaked = dataclasses.replace(entry, prompt=f"{entry.prompt} {findings}")
    assert leak_audit({"train": [leaked]}, forged)["report_text_in_prompts"] == {"train": 1}


def test_short_shared_phrases_are_not_report_text():
    assert not holds_report_text("None.", "None. Lungs are clear.")
    assert holds_report_text(
        "Compared with: the lungs are clear bilaterally", "The lungs are clear bilaterally."
    )
