"""A paper-style qualitative figure: for a few studies, the X-ray, the reference and the generated report,
the words they share coloured (PNG and PDF).

    python plot/qualitative.py results/lora-test_report --out results/figures/qualitative.png     # best, median, worst
    python plot/qualitative.py results/lora-test_report --ids 1900 7 --out results/figures/qualitative.png

Studies are picked by a per-study metric (--metric, pycocoevalcap on the R2Gen-normalised report, as in
eval/score.py): --k studies at evenly spaced ranks from the best to the worst (3: best, median, worst),
or the studies given with --ids. Coloured words are the reference's and the prediction's longest common
subsequence of words (rrg.report.cases.overlap, what ROUGE-L counts), the same words the case browser highlights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.entries import DEFAULT_IMAGE_DIR
from rrg.data.images import read_image
from rrg.io import InputError
from rrg.report.cases import STUDY_METRICS, build_cases, load_run
from rrg.report.results import save_figure

MATCH, OTHER, LABEL = "#1a7f37", "#30343b", "#6b7280"
FONT_SIZE = 8.5
LINE = 1.35 * FONT_SIZE  # points between baselines
FIG_WIDTH, IMAGE_WIDTH = 10.0, 2.1  # inches
_measure = TextToPath()


def pick_studies(cases: list[dict], metric: str, k: int) -> list[tuple[dict, str]]:
    """k cases at evenly spaced ranks of `metric` (run 0), best first, each with its label."""
    scored = [c for c in cases if c["runs"][0] is not None]
    if not scored:
        raise InputError("no study has a prediction to pick from")
    ranked = sorted(scored, key=lambda c: -c["runs"][0]["scores"][metric])  # stable: file order on ties
    k = min(k, len(ranked))
    positions = [round(i * (len(ranked) - 1) / (k - 1)) for i in range(k)] if k > 1 else [0]
    names = {0: "best", len(ranked) - 1: "worst"}
    if k == 3:
        names[positions[1]] = "median"
    return [(ranked[p], f"{names.get(p, 'rank')} ({p + 1} of {len(ranked)}) by {metric}") for p in positions]


def chosen_studies(cases: list[dict], ids: list[str]) -> list[tuple[dict, str]]:
    by_id = {c["id"]: c for c in cases}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise InputError(f"--ids: study {', '.join(map(repr, unknown))} not in the predictions")
    return [(by_id[i], "chosen") for i in ids]


@dataclass
class Word:
    text: str
    colour: str
    weight: str = "normal"
    style: str = "normal"


def _width(text: str, weight: str = "normal", style: str = "normal") -> float:
    prop = FontProperties(size=FONT_SIZE, weight=weight, style=style)
    return _measure.get_text_width_height_descent(text, prop, ismath=False)[0]


SPACE = _width("x x") - 2 * _width("x")


def coloured_words(part: dict, hits: list[int]) -> list[Word]:
    """A report's words, matched ones coloured, with its section names as grey italic words."""
    marks = dict((index, name) for index, name in part["marks"])
    hits_set = set(hits)
    out = []
    for i, word in enumerate(part["text"].split(" ") if part["text"] else []):
        if i in marks:
            out.append(Word(marks[i].capitalize() + ":", LABEL, style="italic"))
        out.append(Word(word, MATCH, "bold") if i in hits_set else Word(word, OTHER))
    return out or [Word("(empty)", LABEL, style="italic")]


def _split_long(words: list[Word], width: float) -> list[Word]:
    """Words wider than a line (a model's run-on token soup) cut into pieces that fit."""
    out = []
    for word in words:
        text = word.text
        while _width(text, word.weight, word.style) > width:
            cut = max(1, int(len(text) * width / _width(text, word.weight, word.style)) - 1)
            out.append(Word(text[:cut], word.colour, word.weight, word.style))
            text = text[cut:]
        out.append(Word(text, word.colour, word.weight, word.style))
    return out


def wrap(words: list[Word], width: float) -> list[list[tuple[float, Word]]]:
    """Greedy line breaking at `width` points: lines of (x offset, word)."""
    lines: list[list[tuple[float, Word]]] = [[]]
    x = 0.0
    for word in _split_long(words, width):
        w = _width(word.text, word.weight, word.style)
        if lines[-1] and x + w > width:
            lines.append([])
            x = 0.0
        lines[-1].append((x, word))
        x += w + SPACE
    return lines


def row_blocks(case: dict, label: str, run_name: str, width: float) -> list[tuple[str, list]]:
    """The text blocks of one row: (heading, wrapped lines)."""
    shown = case["runs"][0]
    scores = " · ".join(f"{m} {shown['scores'][m]:.3f}" for m in STUDY_METRICS)
    return [
        (f"Study {case['id']} — {label} — {scores}", []),
        ("Reference", wrap(coloured_words(case["reference"], shown["ref_hits"]), width)),
        (f"Generated ({run_name})", wrap(coloured_words(shown, shown["hits"]), width)),
    ]


def draw_row(fig, spec, case: dict, blocks: list[tuple[str, list]], width: float, height: float) -> None:
    image_ax = fig.add_subplot(spec[0])
    image_ax.set_axis_off()
    image = case["images"][0] if case["images"] else None
    if image and image["path"]:
        image_ax.imshow(read_image(image["path"]).convert("L"), cmap="gray")
        image_ax.text(
            0.03,
            0.97,
            image["view"] or image["name"],
            transform=image_ax.transAxes,
            fontsize=7,
            color="white",
            va="top",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "lw": 0},
            parse_math=False,
        )
    else:
        image_ax.text(0.5, 0.5, "image not found", ha="center", va="center", color="#a00", fontsize=8)
    text_ax = fig.add_subplot(spec[1])
    text_ax.set_axis_off()
    text_ax.set_xlim(0, width)
    text_ax.set_ylim(height, 0)  # one unit is one point, y downwards
    y = LINE
    for k, (heading, lines) in enumerate(blocks):
        text_ax.text(
            0,
            y,
            heading,
            fontsize=FONT_SIZE + (0.5 if k == 0 else 0),
            weight="bold",
            color=OTHER if k == 0 else LABEL,
            va="baseline",
            parse_math=False,  # report texts are not math: "$" is a dollar sign
        )
        y += LINE
        for line in lines:
            for x, word in line:
                text_ax.text(
                    x,
                    y,
                    word.text,
                    fontsize=FONT_SIZE,
                    color=word.colour,
                    weight=word.weight,
                    style=word.style,
                    va="baseline",
                    parse_math=False,  # report texts are not math: "$" is a dollar sign
                )
            y += LINE
        y += 0.4 * LINE


def make_figure(picked: list[tuple[dict, str]], run_name: str):
    text_width = (FIG_WIDTH - IMAGE_WIDTH - 0.3) * 72
    rows = [row_blocks(case, label, run_name, text_width) for case, label in picked]
    heights = [  # points: the text's lines, or the image, whichever is taller
        max(IMAGE_WIDTH * 72, LINE * (1 + sum(1 + len(lines) + 0.4 for _, lines in blocks)))
        for blocks in rows
    ]
    fig = plt.figure(figsize=(FIG_WIDTH, sum(heights) / 72 + 0.2))
    grid = fig.add_gridspec(
        len(rows),
        2,
        height_ratios=heights,
        width_ratios=[IMAGE_WIDTH, FIG_WIDTH - IMAGE_WIDTH],
        left=0.01,
        right=0.99,
        top=0.99,
        bottom=0.01,
        wspace=0.03,
        hspace=0.05,
    )
    for r, ((case, _), blocks) in enumerate(zip(picked, rows)):
        draw_row(fig, (grid[r, 0], grid[r, 1]), case, blocks, text_width, heights[r])
    return fig


def _save(fig, out: Path, dpi: int) -> list[Path]:
    """PNG and PDF beside each other, each written atomically (rrg.report.results.save_figure)."""
    # Unhinted glyphs: the words sit where their measured (unhinted) widths put them, at any dpi.
    with matplotlib.rc_context({"text.hinting": "no_hinting", "text.hinting_factor": 1}):
        written = [save_figure(fig, out.with_suffix(".png"), close=False, dpi=dpi)]
        written.append(save_figure(fig, out.with_suffix(".pdf"), dpi=dpi))
    return written


@dataclass
class QualitativeSettings:
    results: str = flag(help="results folder holding predictions.jsonl (or the file itself)", positional=True)
    out: str = flag("results/figures/qualitative.png", "PNG to write; the PDF goes beside it", nonempty=True)
    ids: list[str] | None = flag(None, "study ids to show, in this order (None: picked by --metric)")
    k: int = flag(3, "studies to pick when no --ids", ge=1)
    metric: str = flag("ROUGE-L", "per-study metric the studies are picked by", choices=STUDY_METRICS)
    name: str | None = flag(None, "the run's name in the figure (None: the results folder name)")
    image_dir: str = flag(DEFAULT_IMAGE_DIR, "folder holding the images", nonempty=True)
    entries: str | None = flag(None, "the split file, for view names")
    dpi: int = flag(200, "PNG resolution", ge=1)


def parse_args(argv: list[str] | None = None) -> QualitativeSettings:
    return parse_flags(QualitativeSettings, argv, description=__doc__)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run = load_run(args.results, args.name)
    cases = build_cases([run], entries=args.entries, image_dir=args.image_dir)
    picked = chosen_studies(cases, args.ids) if args.ids else pick_studies(cases, args.metric, args.k)
    for path in _save(make_figure(picked, run.name), Path(args.out), args.dpi):
        print(f"figure: {path}")
