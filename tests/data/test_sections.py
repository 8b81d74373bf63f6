"""A heading is a heading only where one can stand: a report ending in the word keeps the word."""

import csv

import pytest

from rrg.data.sections import parse_sections


@pytest.mark.parametrize(
    ("text", "findings", "impression"),
    [
        ("Impression: No acute cardiopulmonary findings", None, "No acute cardiopulmonary findings"),
        ("Impression: No acute findings", None, "No acute findings"),
        ("Findings: Lungs clear. Impression: Chronic changes, no acute findings", "Lungs clear.",
         "Chronic changes, no acute findings"),
        ("Findings: see prior impression\nImpression: normal", "see prior impression", "normal"),
        # the word alone on its line is still a heading
        ("Findings\nlungs clear\nImpression\nnormal", "lungs clear", "normal"),
        ("lungs clear. Impression\nnormal", None, "normal"),
    ],
)
def test_a_trailing_section_word_is_not_a_heading(text, findings, impression):
    sections = parse_sections(text)
    assert (sections.findings, sections.impression) == (findings, impression)


def test_body_keeps_a_trailing_findings_word():
    assert parse_sections("No acute cardiopulmonary findings").body == "No acute cardiopulmonary findings"
    assert parse_sections("no acute findings", keep_spacing=True).body == "no acute findings"


def test_no_kaggle_impression_loses_its_last_word(iu_xray_dir):
    with open(iu_xray_dir / "indiana_reports.csv", newline="") as f:
        impressions = [row["impression"] for row in csv.DictReader(f) if row["impression"]]
    ending = [t for t in impressions if t.split() and t.split()[-1].lower().strip(".") in
              {"finding", "findings", "impression", "impressions"}]
    assert len(ending) >= 60  # the texts the bug cut
    cut = [t for t in ending if parse_sections(t).body != " ".join(t.split())]
    assert cut == []
