"""Split a radiology report into its Findings and Impression sections, tolerantly.

Generated reports are not always well formed, so the parser accepts what models and people write:
any case ("Findings:", "FINDINGS", "findings -"), impression before findings, a section missing
(reported as None, so callers can count it), a heading alone on its line. Unlike the reference
paper's greedy `Findings: (.+)` regex, a section ends where the next heading starts, so "findings"
never swallows the impression.

A heading is the word findings/impression (singular or plural) at the start of the text, of a line or
of a sentence (after . ; or whitespace) followed by ":" or a dash, or standing alone on its line (at the
start of a line or right after a full stop, with nothing after it on that line); an all-caps
FINDINGS/IMPRESSION needs no colon at the start of a line or sentence. A report that merely ends in the
word is not cut: "No acute findings." and "No acute cardiopulmonary findings" keep their last word.

By default each section and the body have their whitespace runs squashed to one space. With
`keep_spacing` (raw scoring) the text is kept as given: a section is only stripped where a heading cut
it, and a report without headings is its own body, byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = r"(?P<name>findings?|impressions?)"
_HEADING = re.compile(
    rf"""(?:^|(?<=[\s.;]))(?i:{_NAME})\s*[:\-\u2013\u2014]+                      # Findings: / findings -
       | (?:^[ \t]*|(?<=[.;])[ \t]*)(?i:(?P<alone>findings?|impressions?))[ \t]*(?=\n|\Z)  # alone on its line
       | (?:^|(?<=[.;])|(?<=[.;]\s))(?P<caps>FINDINGS?|IMPRESSIONS?)\b[ \t]*[:\-\u2013\u2014]*  # FINDINGS""",
    re.VERBOSE | re.MULTILINE,
)


@dataclass(frozen=True)
class Sections:
    findings: str | None  # None: the report has no findings heading
    impression: str | None  # None: no impression heading
    body: str  # the whole report without its heading words (what "report" metrics score)


def _squash(text: str) -> str:
    return " ".join(text.split())


def section_pieces(text: str) -> list[tuple[str | None, str]]:
    """The report cut at its headings: (None, text before the first heading), then (section, its text)
    per heading in order of appearance, section being "findings" or "impression"; heading words dropped.

    Joined with spaces, the pieces are the report's `body` (what the browser highlights word by word).
    """
    matches = list(_HEADING.finditer(text))
    pieces: list[tuple[str | None, str]] = [(None, text[: matches[0].start()] if matches else text)]
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = (match.group("name") or match.group("alone") or match.group("caps")).lower()
        pieces.append(("findings" if name.startswith("finding") else "impression", text[match.end() : end]))
    return pieces


def parse_sections(text: str, keep_spacing: bool = False) -> Sections:
    """Find the Findings and Impression sections of a report (see the module docstring for the rules).

    A section named twice is the two bodies joined. Text before the first heading belongs to no
    section but stays in `body`. keep_spacing: whitespace inside the text is kept as given.
    """
    pieces = section_pieces(text)
    if keep_spacing and len(pieces) == 1:
        return Sections(findings=None, impression=None, body=text)
    tidy = str.strip if keep_spacing else _squash
    parts: dict[str, list[str]] = {}
    for key, content in pieces[1:]:
        parts.setdefault(key, []).append(tidy(content))

    def section(key: str) -> str | None:
        return " ".join(p for p in parts[key] if p) if key in parts else None

    body = " ".join(p for p in (tidy(content) for _, content in pieces) if p)
    return Sections(findings=section("findings"), impression=section("impression"), body=body)
