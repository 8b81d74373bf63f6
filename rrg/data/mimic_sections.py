"""The sections of a MIMIC-CXR free-text report (findings, impression, indication, ...), by the dataset's rules.

MIMIC-CXR reports are laid out as lines that start with a space, each section opening with an all-caps
header and a colon: " INDICATION:  ...", " FINDINGS:  ...", " IMPRESSION:  ...". The dataset's authors
sectioned them with MIT-LCP/mimic-cxr `txt/section_parser.py` (`section_text`) and took, per study, the
*last* section of each name (`txt/create_section_files.py`). This module gives the same result, so our
split files' references are the ones the MIMIC-CXR literature uses (tests/data/test_mimic_sections.py holds
the two equal on reports built from every header the authors' table lists). The rules:

- a header is a newline, one space, then upper-case letters, spaces and ()/,- up to a colon and a
  whitespace character; the text before the first header is the "preamble";
- a section runs to the next header that starts after the first newline following its own header
  (so a header on the very next line is not a section break: it stays in the text, as upstream);
- header names are normalised: the authors' table of spellings and misspellings first, then a name
  holding impression/findings/history/comparison/addendum is that section, then a name describing the
  views ("PA AND LATERAL", "PORTABLE", "CHEST", ...) is findings;
- an empty findings or impression section is dropped (a report title such as "CHEST, PA LATERAL:" just
  before the real sections);
- a report with neither findings nor impression gets a "last_paragraph" section: the text after the
  first blank line (" \\n") of its last section.

The authors' per-study manual fixes (`custom_mimic_cxr_rules`, 31 reports with hand-set character
offsets) are not applied: they cut the single conclusion text, not the findings/impression columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")

# Header spellings the authors normalise, with their counts in MIMIC-CXR (from their table).
SPELLINGS = {
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "notification": "notification",
    "reason for exam": "indication",
    "clinical information": "history",
    "exam": "examination",
    "clinical indication": "indication",
    "conclusion": "impression",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations",
    "type of examination": "examination",
    "reference exam": "comparison",
    "patient history": "history",
    "addendum": "addendum",
    "comparison exam": "comparison",
    "date": "date",
    "comment": "comment",
    "findings and impression": "impression",
    "wet read": "wet read",
    "comparison film": "comparison",
    "recommendations": "recommendations",
    "findings/impression": "impression",
    "pfi": "history",
    "recommendation": "recommendations",
    "wetread": "wet read",
    "ndication": "impression",  # sic: upstream maps this misspelling to impression
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "reference findings": "findings",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}
# A name holding one of these words is that section (checked in this order).
MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
# A header describing the views of the study is a findings section.
VIEW_WORDS = re.compile(
    "chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views"
    "|frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright"
    "|ribs|pa and lat"
)


def section_name(header: str) -> str:
    """The normalised name of a header ("CLINICAL HISTORY" -> "history", "PA AND LATERAL" -> "findings")."""
    name = header.lower().strip()
    if name in SPELLINGS:
        return SPELLINGS[name]
    for main in MAIN_SECTIONS:
        if main in name:
            return main
    return "findings" if VIEW_WORDS.search(name) else name


@dataclass(frozen=True)
class Section:
    name: str
    text: str
    start: int  # offset of the text in the report


def split_sections(text: str) -> list[Section]:
    """The report cut into named sections, in order (the rules are in the module docstring)."""
    first = _HEADER.search(text)
    if first is None:
        sections = [Section("full report", text, 0)]
    else:
        sections = [Section("preamble", text[: first.start(1)], 0)]
        header = first
        while header is not None:
            start = header.end()
            newline = text.find("\n", start)
            following = _HEADER.search(text, newline if newline != -1 else start)
            end = following.start() if following else len(text)
            sections.append(Section(section_name(header.group(1)), text[start:end], start))
            header = following
    sections = [s for s in sections if s.name not in ("findings", "impression") or s.text.strip()]
    if not any(s.name in ("findings", "impression") for s in sections):
        last = sections[-1]
        head, blank, rest = last.text.partition("\n \n")
        if blank:
            sections[-1] = Section(last.name, head, last.start)
            sections.append(Section("last_paragraph", rest, last.start + len(head)))
    return sections


@dataclass(frozen=True)
class MimicSections:
    """The last section of each name, stripped (None when the report has none): the authors' columns."""

    findings: str | None
    impression: str | None
    indication: str | None
    last_paragraph: str | None
    comparison: str | None


def mimic_sections(text: str) -> MimicSections:
    last: dict[str, str] = {}
    for section in split_sections(text):
        last[section.name] = section.text.strip()
    return MimicSections(**{key: last.get(key) for key in MimicSections.__dataclass_fields__})
