"""Every relative link in README.md and docs/*.md points at a file that exists (and a heading, for `#anchors`)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Pages of features that land together with the manual; a link to one of them may be missing until then.
# Once a page exists, links to it (and its anchors) are checked like any other.
PENDING_PAGES = {
    "docs/leaderboard-metrics.md",
    "docs/datasets.md",
    "docs/peer-features.md",
    "docs/decoding.md",
    "docs/inputs-and-resume.md",
    "docs/flags-and-runs.md",
    "docs/evaluation-notes.md",
}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: code is not Markdown."""
    lines, in_code = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code:
            lines.append((number, line))
    return lines


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings (lower case, punctuation dropped, spaces as hyphens)."""
    anchors, seen = set(), {}
    for _, line in prose_lines(text):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(page: Path, root: Path, pending: set[str] = frozenset()) -> list[str]:
    """'page:line: target (why)' for every relative link of `page` that does not resolve."""
    problems = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
            where = f"{page.relative_to(root)}:{number}: {target}"
            if not resolved.exists():
                relative = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else None
                if relative not in pending:
                    problems.append(f"{where} (no such file)")
                continue
            if (
                anchor
                and resolved.suffix == ".md"
                and anchor not in heading_anchors(resolved.read_text("utf-8"))
            ):
                problems.append(f"{where} (no heading with that anchor)")
    return problems


def documentation_pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def test_every_relative_link_in_the_docs_resolves():
    pages = documentation_pages(ROOT)
    assert len(pages) > 1, "no docs/*.md found"
    problems = [problem for page in pages for problem in broken_links(page, ROOT, PENDING_PAGES)]
    assert not problems, "\n".join(problems)


def test_a_missing_file_or_heading_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "setup.md").write_text("# Set up\n\n## The model\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "[ok](docs/setup.md#the-model) [gone](docs/nowhere.md) [bad anchor](docs/setup.md#no-such)\n"
        "[web](https://example.org/x.md) [pending](docs/later.md)\n"
        "```\n[in code](docs/not-checked.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(tmp_path / "README.md", tmp_path, {"docs/later.md"})
    assert problems == [
        "README.md:1: docs/nowhere.md (no such file)",
        "README.md:1: docs/setup.md#no-such (no heading with that anchor)",
    ]


def test_anchors_follow_githubs_rules():
    text = (
        "# How this differs, and why\n### Legacy: the paper's metric code (`--legacy`)\n## Notes\n## Notes\n"
    )
    assert heading_anchors(text) == {
        "how-this-differs-and-why",
        "legacy-the-papers-metric-code---legacy",
        "notes",
        "notes-1",
    }
