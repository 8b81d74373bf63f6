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

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.io import InputError, atomic_write_text
from rrg.report.results import (
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
from rrg.score.clinical.f1 import CLINICAL_NAMES, LABELER_NAMES
from rrg.score.radeval import COLUMNS as RADEVAL_COLUMNS
from rrg.score.radeval import headline_cells, read_block

INFO_COLUMNS = ["Model", "Split", "Tooling", "Section"]
# Clinical columns: the card's "clinical" block (rrg.score.clinical.f1), each named with its labeler (the offline rules
# read higher than CheXbert on the same texts); RadGraph is its partial reward.
CLINICAL_KEYS = ("f1_micro_14", "f1_micro_5", "f1_micro_13")
RADGRAPH_COLUMN = "RadGraph"
REXRANK_BLEU_COLUMN = "ReXrank BLEU-2"
# ReXrank's leaderboard CSV columns (BLEU is its BLEU-2) and what our cards hold of them.
REXRANK_CSV_COLUMNS = (
    "BLEU",
    "BertScore",
    "SembScore",
    "RadGraph",
    "1/RadCliQ-v1",
    "RaTEScore",
    "GREEN",
    "1/FineRadScore",
)
REXRANK_MODEL_BASED = REXRANK_CSV_COLUMNS[1:3] + REXRANK_CSV_COLUMNS[4:]
REXRANK_GROUP = "rexrank"
REXRANK_RADGRAPH_COLUMN = "RadGraph (ReXrank)"
UNVERIFIED_MARK = "†"
GROUP_TITLES = {
    "ours": "ours",
    "reference": "reference paper",
    "literature": "literature",
    REXRANK_GROUP: "ReXrank leaderboard (other model family)",
}
NOTE = (
    "Rows are comparable only when Split AND Tooling match. 'pycocoevalcap corpus-level' = corpus BLEU "
    "(coco-caption), METEOR 1.5 jar, ROUGE-L, CIDEr-D over the whole test set; 'nltk sentence-level (legacy)' "
    "= the reference paper's code (nltk sentence-BLEU averaged per sample, nltk METEOR), which scores higher "
    "on the same predictions. '–' = not reported. † = published numbers not all confirmed against a source "
    "(see plot/literature.json). F1-14 / F1-5 micro: CheXpert-label F1 (positive vs rest) over the 14 / 5 "
    "observations from the labeler the card names (clinical.labeler: 'offline' = this repository's rule-based "
    "CheXpert labeler, not the CheXbert-F1 of papers); RadGraph: RadGraph-F1 (partial reward) where computed. "
    "Every F1 column names its labeler: the offline rules read about 0.08 higher in micro-F1-14 than CheXbert "
    "on a published model's IU X-Ray outputs, so an offline figure is never to be set beside a published "
    "CheXbert one. 'without No Finding': micro F1 of the other 13 observations. ReXrank BLEU-2: "
    "CXR-Report-Metric's per-study BLEU-2, mean over studies (ReXrank's 'BLEU'). ReXrank leaderboard rows are "
    "other model families (mostly trained on MIMIC-CXR), scored by ReXrank with model-based metrics we did not "
    "run here (no weights reachable)."
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
    rexrank_csv: str | None = flag(
        None, "A ReXrank leaderboard CSV (e.g. findings_result_iu_xray.csv): its rows join the table."
    )


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


def clinical_column(key: str, labeler: str) -> str:
    """A clinical column's name, e.g. "F1-14 micro, CheXpert rules (offline)": it always names its labeler."""
    return f"{CLINICAL_NAMES[key]}, {LABELER_NAMES.get(labeler, labeler)}"


def _cell(value: float | None, bounds: list[float] | None, with_ci: bool) -> str:
    text = format_value(value)
    if with_ci and bounds and text != "–":
        text += f" [{format_value(bounds[0])}, {format_value(bounds[1])}]"
    return text


def _clinical_cells(card: ScoreCard | None, with_ci: bool = True) -> dict[str, str]:
    """The clinical columns a card fills (its labeler's F1 columns, RadGraph, ReXrank's BLEU-2); build_table
    gives every other column '–'."""
    cells = {}
    labeler = (card.clinical or {}).get("labeler") if card is not None else None
    if labeler and labeler != "none":
        for key in CLINICAL_KEYS:
            cells[clinical_column(key, labeler)] = _cell(*clinical_value(card, key), with_ci)
    if card is not None:
        cells[RADGRAPH_COLUMN] = _cell(*clinical_value(card, "radgraph_partial"), with_ci)
        block = card.rexrank_bleu or {}
        cells[REXRANK_BLEU_COLUMN] = _cell(block.get("bleu2"), block.get("ci95"), with_ci)
    return cells


def _radeval_cells(card: ScoreCard, with_ci: bool = True) -> dict[str, str]:
    """A column per RadEval metric the card's "radeval" block holds (its headline figure)."""
    cells = headline_cells(read_block(card.path))
    return {column: _cell(value, bounds, with_ci) for column, (value, bounds) in cells.items()}


def rexrank_rows(path: str | Path, split: str) -> list[dict]:
    """ReXrank leaderboard rows (another model family), their BLEU as ReXrank BLEU-2."""
    frame = pd.read_csv(path) if Path(path).is_file() else None
    if frame is None:
        raise InputError(f"{path}: file not found (a ReXrank leaderboard CSV)")
    missing = [c for c in ("Model Name", *REXRANK_CSV_COLUMNS) if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}")
    rows = []
    for _, r in frame.iterrows():
        row = {
            "Group": REXRANK_GROUP,
            "Model": str(r["Model Name"]),
            "Split": split,
            "Tooling": "ReXrank's evaluation (CXR-Report-Metric BLEU-2, model-based metrics)",
            "Section": "findings" if "findings" in Path(path).name else "report",
            REXRANK_BLEU_COLUMN: format_value(r["BLEU"]),
            **{c: format_value(r[c]) for c in REXRANK_MODEL_BASED},
            "Source": f"ReXrank leaderboard ({Path(path).name}); {r.get('Institution', '')} {r.get('Model URL', '')}",
        }
        # ReXrank's RadGraph is its own figure, not the card's partial reward: a column of its own.
        row[REXRANK_RADGRAPH_COLUMN] = format_value(r["RadGraph"])
        rows.append(row)
    return rows


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
            **_radeval_cells(card, config.with_ci),
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
    if config.rexrank_csv:
        rows.extend(rexrank_rows(config.rexrank_csv, "ReXrank IU X-Ray test (590)"))
    # Value columns in a fixed order: n-gram, then the clinical ones some row fills, then ReXrank's.
    filled = {k for row in rows for k in row}  # a labeler's columns exist when one of its cards is here
    clinical = [
        clinical_column(key, labeler)
        for labeler in LABELER_NAMES
        for key in CLINICAL_KEYS
        if clinical_column(key, labeler) in filled
    ]
    extra = [
        c
        for c in (RADGRAPH_COLUMN, REXRANK_BLEU_COLUMN, REXRANK_RADGRAPH_COLUMN, *REXRANK_MODEL_BASED)
        if any(row.get(c, "–") != "–" for row in rows)
    ]
    radeval = [c for c in RADEVAL_COLUMNS if any(row.get(c, "–") != "–" for row in rows)]
    columns = ["Group", *INFO_COLUMNS, *STANDARD_METRICS, *clinical, *extra, *radeval, "Source"]
    return pd.DataFrame(rows, columns=columns).fillna("–")


def value_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in ("Group", *INFO_COLUMNS, "Source")]


def render_markdown(table: pd.DataFrame) -> str:
    shown = table.assign(Group=table["Group"].map(GROUP_TITLES))
    body = markdown_table(shown.drop(columns=["Source"]))
    sources = "\n".join(f"- **{m}**: {s}" for m, s in zip(table["Model"], table["Source"]))
    return f"# IU X-Ray report generation: comparison\n\n{body}\n{NOTE}\n\nSources:\n\n{sources}\n"


GROUP_COLOURS = {"ours": "#dbeafe", "reference": "#fde68a", "literature": "#f3f4f6", REXRANK_GROUP: "#dcfce7"}


def render_png(table: pd.DataFrame, path: Path) -> None:
    """A matplotlib table sized to its content, rows shaded by group, with the comparability note."""
    shown = table.drop(columns=["Source"]).assign(Group=table["Group"].map(GROUP_TITLES))
    # Intervals make cells too wide for a figure; the Markdown keeps them.
    for name in value_columns(table):
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
