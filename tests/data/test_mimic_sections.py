"""rrg.data.mimic_sections gives what the MIMIC-CXR authors' section parser gives (kept in tests/ as the reference)."""

from __future__ import annotations

import pytest

from rrg.data.mimic_sections import SPELLINGS, mimic_sections, section_name, split_sections
from tests import mimic_cxr_section_parser as upstream

VIEW_HEADERS = [
    "CHEST",
    "PORTABLE CHEST",
    "PA AND LATERAL",
    "LATERAL AND PA",
    "AP AND LATERAL",
    "LATERAL AND AP",
    "FRONTAL AND LATERAL",
    "TWO VIEWS",
    "FRONTAL VIEW",
    "PA VIEW",
    "AP VIEW",
    "ONE VIEW",
    "LATERAL VIEW",
    "BONE WINDOW",
    "FRONTAL UPRIGHT",
    "FRONTAL SEMI-UPRIGHT",
    "RIBS",
    "PA AND LAT",
]
MAIN_HEADERS = ["FINAL IMPRESSION", "PRELIMINARY FINDINGS", "PAST HISTORY", "COMPARISON STUDY", "ADDENDUM (1)"]


def report(*sections: tuple[str, str], title: str = " FINAL REPORT") -> str:
    """A report in MIMIC-CXR's layout: every line starts with a space, headers in capitals with a colon."""
    body = "".join(f"\n \n {header}:  {text}" for header, text in sections)
    return f"                                 {title}{body}\n"


HEADER_CASES = [report(("EXAMINATION", "Chest radiograph."), (name.upper(), "Text of the section.\n more."))
                for name in SPELLINGS if name != "preamble"]
HEADER_CASES += [report(("INDICATION", "Cough."), (h, "Lungs are clear.")) for h in VIEW_HEADERS + MAIN_HEADERS]
DOCUMENTED_CASES = [
    # a report title just before the real sections: the empty findings section is dropped
    " CHEST, PA LATERAL:\n \n INDICATION:   This is the actual section.\n \n IMPRESSION:  No acute process.\n",
    # two findings sections, one empty
    report(("FINDINGS", ""), ("INDICATION", "Fever."), ("FINDINGS", "Clear lungs."), ("IMPRESSION", "Normal.")),
    # no findings/impression: the last paragraph becomes its own section
    report(("INDICATION", "Pain."), ("COMPARISON", "None.\n \n Heart size normal. Lungs clear.")),
    # no header at all
    "Heart size is normal.\n \n No pneumothorax.\n",
    # a header whose colon ends its line is followed by a header that is not a section break (upstream
    # skips to the next newline), and one with text after it is
    " FINAL REPORT\n INDICATION:\n FINDINGS:  Clear.\n IMPRESSION:  Normal.\n",
    # impression before findings, a section named twice (the last one is kept)
    report(("IMPRESSION", "First."), ("FINDINGS", "Lungs."), ("IMPRESSION", "Second.")),
    # wet read, notification and an unknown header
    report(("WET READ", "Read by x."), ("FINDINGS", "A."), ("NOTIFICATION", "Called."), ("STRANGE HEADER", "y")),
    # a header ending the text and a lower-case pseudo-header (not a header)
    " FINAL REPORT\n \n Findings: lower case is not a header.\n \n IMPRESSION: \n",
]


def upstream_sections(text: str) -> list[tuple[str, str, int]]:
    sections, names, starts = upstream.section_text(text)
    return list(zip(names, sections, starts))


def upstream_last(text: str) -> dict[str, str | None]:
    sections, names, _ = upstream.section_text(text)
    last: dict[str, str] = {}
    for name, section in zip(names, sections):
        last[name] = section.strip()
    return {key: last.get(key) for key in ("findings", "impression", "indication", "last_paragraph", "comparison")}


@pytest.mark.parametrize("text", HEADER_CASES + DOCUMENTED_CASES)
def test_same_sections_as_the_authors_parser(text):
    ours = [(s.name, s.text, s.start) for s in split_sections(text)]
    assert ours == upstream_sections(text)
    assert vars(mimic_sections(text)) == upstream_last(text)


def test_every_spelling_normalises_as_upstream():
    names = list(SPELLINGS) + [h.lower() for h in VIEW_HEADERS + MAIN_HEADERS] + ["strange header"]
    assert [section_name(n) for n in names] == upstream.normalize_section_names(names)


def test_the_cases_exercise_each_rule():
    # the fixtures above must keep covering what they are for
    assert mimic_sections(DOCUMENTED_CASES[0]).impression == "No acute process."
    assert mimic_sections(DOCUMENTED_CASES[1]).findings == "Clear lungs."
    assert mimic_sections(DOCUMENTED_CASES[2]).last_paragraph == "Heart size normal. Lungs clear."
    assert mimic_sections(DOCUMENTED_CASES[4]).findings is None  # FINDINGS stayed inside INDICATION
    assert mimic_sections(DOCUMENTED_CASES[5]).impression == "Second."
    assert mimic_sections(report(("CONCLUSION", "Done."))).impression == "Done."
    assert mimic_sections(report(("PA AND LATERAL", "Clear."))).findings == "Clear."
