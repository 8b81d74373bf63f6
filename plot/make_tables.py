"""The comparison table: our runs beside the reference paper and published IU X-Ray results.

    python plot/make_tables.py \
        --runs results/reference/lora/scores.json:"Ours (LoRA, reference split)" \
               results/r2gen/lora/scores.json:"Ours (LoRA, R2Gen split)" \
        --out results/table

writes results/table/table.md and results/table/table.png. Every row carries its test split and its
metric tooling: numbers from different splits or metric code are not comparable, and the table says so
instead of hiding it. A card with a "legacy" block adds a second row with the reference paper's own
metric code (findings section), the only like-for-like comparison with the reference's numbers.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.io import InputError, atomic_write_text
from rrg.results import (
    DEFAULT_LITERATURE,
    LEGACY_TOOLING,
    STANDARD_METRICS,
    ScoreCard,
    clinical_value,
    format_value,
    infer_split_label,
    legacy_sections,
    load_literature,
    load_scores,
    markdown_table,
    save_figure,
    tooling_label,
)

INFO_COLUMNS = ["Model", "Split", "Tooling", "Section"]
# Clinical columns: the card's "clinical" block (rrg.clinical); RadGraph is its partial reward.
CLINICAL_COLUMNS = {"F1-14 micro": "f1_micro_14", "F1-5 micro": "f1_micro_5", "RadGraph": "radgraph_partial"}
UNVERIFIED_MARK = "†"
GROUP_TITLES = {"ours": "ours", "reference": "reference paper", "literature": "literature"}
NOTE = (
    "Rows are comparable only when Split AND Tooling match. 'pycocoevalcap corpus-level' = corpus BLEU "
    "(coco-caption), METEOR 1.5 jar, ROUGE-L, CIDEr-D over the whole test set; 'nltk sentence-level (legacy)' "
    "= the reference paper's code (nltk sentence-BLEU averaged per sample, nltk METEOR), which scores higher "
    "on the same predictions. '–' = not reported. † = published numbers not all confirmed against a source "
    "(see plot/literature.json). F1-14 / F1-5 micro: CheXpert-label F1 (positive vs rest) over the 14 / 5 "
    "observations from the labeler the card names (clinical.labeler: 'offline' = this repository's rule-based "
    "CheXpert labeler, not the CheXbert-F1 of papers); RadGraph: RadGraph-F1 (partial reward) where computed."
)


@dataclass
class TableConfig:
    runs: list[str] = flag(
        help="PATH[:NAME[:SPLIT]] per run: a scores.json, its display name, and optionally the split label "
        "(default: derived from the card's settings / results path).",
    )
    out: str = flag(help="Output folder for table.md and table.png.", nonempty=True)
    literature: str = flag(str(DEFAULT_LITERATURE), "Literature rows (JSON).")
    section: str = flag("report", "Card section for our standard rows.")
    legacy_section: str = flag("findings", "Card legacy section for legacy rows.")
    with_ci: bool = flag(True, "Show [lo, hi] bootstrap intervals when present.")


@dataclass
class RunSpec:
    path: Path
    name: str
    split: str | None = None


def parse_run_spec(spec: str) -> RunSpec:
    """'results/x/scores.json:Ours (LoRA):R2Gen 7:1:2 (test)' -> path, name, split (split keeps its colons)."""
    path, _, rest = spec.partition(":")
    name, _, split = rest.partition(":")
    if not path:
        raise InputError(f"--runs {spec!r}: expected PATH[:NAME[:SPLIT]]")
    return RunSpec(Path(path), name or Path(path).parent.as_posix(), split or None)


def _metric_cells(metrics: dict, ci95: dict | None = None) -> dict[str, str]:
    cells = {}
    for name in STANDARD_METRICS:
        text = format_value(metrics.get(name))
        bounds = (ci95 or {}).get(name)
        if bounds and text != "–":
            text += f" [{format_value(bounds[0])}, {format_value(bounds[1])}]"
        cells[name] = text
    return cells


def _clinical_cells(card: ScoreCard | None, with_ci: bool = True) -> dict[str, str]:
    """The clinical columns of a card ('–' where it has no clinical block or no RadGraph)."""
    cells = {}
    for column, key in CLINICAL_COLUMNS.items():
        value, bounds = clinical_value(card, key) if card is not None else (None, None)
        text = format_value(value)
        if with_ci and bounds and text != "–":
            text += f" [{format_value(bounds[0])}, {format_value(bounds[1])}]"
        cells[column] = text
    return cells


def rows_for_card(card: ScoreCard, spec: RunSpec, config: TableConfig) -> list[dict]:
    if config.section not in card.metrics:
        raise InputError(
            f"{card.path}: no section '{config.section}' in 'metrics' (has {sorted(card.metrics)})"
        )
    split = spec.split or infer_split_label(card)
    ci = card.ci95.get(config.section) if config.with_ci else None
    rows = [
        {
            "Group": "ours",
            "Model": spec.name,
            "Split": split,
            "Tooling": tooling_label(card),
            "Section": config.section,
            **_metric_cells(card.metrics[config.section], ci),
            **_clinical_cells(card, config.with_ci),
            "Source": str(card.path),
        }
    ]
    legacy = legacy_sections(card)
    if legacy:
        if config.legacy_section not in legacy:
            raise InputError(
                f"{card.path}: no section '{config.legacy_section}' in 'legacy' (has {sorted(legacy)})"
            )
        rows.append(
            {
                "Group": "ours",
                "Model": f"{spec.name} (legacy metrics)",
                "Split": split,
                "Tooling": LEGACY_TOOLING,
                "Section": config.legacy_section,
                **_metric_cells(legacy[config.legacy_section]),
                **_clinical_cells(None),
                "Source": str(card.path),
            }
        )
    return rows


def literature_rows(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        source = row["source"]
        citation = f"{source['title']} ({source['venue']} {source['year']}, {source['table']})"
        if not row["verified"]:
            citation += f" [{UNVERIFIED_MARK} not all numbers confirmed: {row.get('verification', '')}]"
        out.append(
            {
                "Group": row["group"],
                "Model": row["model"] + ("" if row["verified"] else f" {UNVERIFIED_MARK}"),
                "Split": row["split"],
                "Tooling": row["tooling"],
                "Section": row["section"],
                **_metric_cells(row["metrics"]),
                **_clinical_cells(None),
                "Source": citation,
            }
        )
    return out


def build_table(specs: list[RunSpec], config: TableConfig) -> pd.DataFrame:
    """One row per (run, metric code) plus the literature, ours first; all cells are strings."""
    rows = []
    for spec in specs:
        rows.extend(rows_for_card(load_scores(spec.path), spec, config))
    published = load_literature(config.literature)
    # Reference paper before the literature: it is the row our legacy rows are meant to be read against.
    published.sort(key=lambda r: r["group"] != "reference")
    rows.extend(literature_rows(published))
    columns = ["Group", *INFO_COLUMNS, *STANDARD_METRICS, *CLINICAL_COLUMNS, "Source"]
    return pd.DataFrame(rows, columns=columns)


def render_markdown(table: pd.DataFrame) -> str:
    shown = table.assign(Group=table["Group"].map(GROUP_TITLES))
    body = markdown_table(shown.drop(columns=["Source"]))
    sources = "\n".join(f"- **{m}**: {s}" for m, s in zip(table["Model"], table["Source"]))
    return f"# IU X-Ray report generation: comparison\n\n{body}\n{NOTE}\n\nSources:\n\n{sources}\n"


GROUP_COLOURS = {"ours": "#dbeafe", "reference": "#fde68a", "literature": "#f3f4f6"}


def render_png(table: pd.DataFrame, path: Path) -> None:
    """A matplotlib table sized to its content, rows shaded by group, with the comparability note."""
    shown = table.drop(columns=["Source"]).assign(Group=table["Group"].map(GROUP_TITLES))
    # Intervals make cells too wide for a figure; the Markdown keeps them.
    for name in [*STANDARD_METRICS, *CLINICAL_COLUMNS]:
        shown[name] = shown[name].str.split(" [", regex=False).str[0]
    n_rows, n_cols = shown.shape
    fig_width = max(
        12.0, 0.95 * n_cols + 0.07 * shown["Model"].str.len().max() + 0.06 * shown["Split"].str.len().max()
    )
    fig, ax = plt.subplots(figsize=(fig_width, 0.3 * (n_rows + 1) + 1.0))
    ax.axis("off")
    grid = ax.table(
        cellText=shown.values, colLabels=list(shown.columns), loc="upper center", cellLoc="center"
    )
    grid.auto_set_font_size(False)
    grid.set_fontsize(9)
    grid.auto_set_column_width(list(range(n_cols)))
    grid.scale(1.0, 1.5)
    for (r, _c), cell in grid.get_celld().items():
        if r == 0:
            cell.set_facecolor("#1f2937")
            cell.set_text_props(color="white", weight="bold")
        else:
            cell.set_facecolor(GROUP_COLOURS.get(table["Group"].iloc[r - 1], "white"))
    ax.set_title(
        "IU X-Ray report generation: ours vs reference paper vs literature", fontsize=12, weight="bold"
    )
    # Put the note right under the drawn table (its height depends on the row count), so the
    # tight bounding box leaves no empty band between them.
    fig.canvas.draw()
    box = grid.get_window_extent(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted())
    fig.text(box.x0, box.y0 - 0.01, textwrap.fill(NOTE, 230), fontsize=8, va="top", ha="left")
    save_figure(fig, path, dpi=150, bbox_inches="tight")


def write_outputs(table: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out_dir / "table.md", out_dir / "table.png"
    atomic_write_text(md_path, render_markdown(table))
    tmp_png = out_dir / ".table.tmp.png"
    render_png(table, tmp_png)
    tmp_png.replace(png_path)  # rename: a reader never sees half a PNG
    return md_path, png_path


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    config = parse_flags(TableConfig, argv, description=__doc__)
    table = build_table([parse_run_spec(s) for s in config.runs], config)
    md_path, png_path = write_outputs(table, Path(config.out))
    print(f"wrote {md_path} and {png_path} ({len(table)} rows)")


if __name__ == "__main__":
    main()
