r"""Metric bars from score cards: one row per report section, with bootstrap 95% intervals as error bars,
and (when a card holds an image control) a row of real-minus-control differences. CIDEr (0-10) has its
own axes beside the 0-1 metrics; a section no prediction (or no reference) has is said so, not drawn as
zeros.

    python plot/metrics.py results/reference/lora/scores.json results/reference/zero_shot/scores.json \
        --labels "LoRA" "zero-shot" --out results/figures/metrics.png

The control row answers "does the model use the image?": a report scored against blank or shuffled
images should lose points; a difference near zero means the text is written from the prompt alone.

Cards with a "clinical" block (CheXpert-14 label F1, rrg.score.clinical.f1) also get a second figure,
--clinical_out (default: <out>_clinical.png): F1 per observation with bootstrap 95% intervals, the
micro/macro F1 over 14 and 5 observations, and the image-control difference of those F1s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rrg.cli import RUNS_DIR, build_parser, exits_on_input_error, flag
from rrg.io import InputError
from rrg.report.results import SECTIONS, STANDARD_METRICS, ScoreCard, clinical_value, load_scores, save_figure
from rrg.score.clinical.f1 import F1_KEYS, LABELER_NAMES
from rrg.score.clinical.labeler import OBSERVATIONS


@dataclass
class MetricsPlotConfig:
    scores: list[str] = flag(help="scores.json files written by the evaluation.", positional=True)
    out: str = flag(f"{RUNS_DIR}/figures/metrics.png", "Output PNG.", nonempty=True)
    labels: list[str] | None = flag(None, "Legend names, one per card (default: results/<name>).", nargs="+")
    sections: list[str] | None = flag(None, f"Sections to show (default: those present of {SECTIONS}).", nargs="+")
    clinical_out: str | None = flag(
        None,
        "Output PNG of the clinical F1 figure (default: <out>_clinical.png; written when a card has a "
        "clinical block).",
    )


def parse_args(argv: list[str] | None = None) -> MetricsPlotConfig:
    parser = build_parser(MetricsPlotConfig, description=__doc__)
    (config,) = parser.parse_args_into_dataclasses(args=argv)
    if config.labels and len(config.labels) != len(config.scores):
        parser.error(f"--labels has {len(config.labels)} names for {len(config.scores)} cards")
    return config


# CIDEr runs 0-10 while the others run 0-1: each scale gets its own axes, side by side.
SCALES = (
    ("score (0–1)", [m for m in STANDARD_METRICS if m != "CIDEr"]),
    ("CIDEr (0–10)", ["CIDEr"]),
)


def _value(table: dict, section: str, metric: str) -> float:
    value = (table.get(section) or {}).get(metric)
    return float(value) if value is not None else np.nan


def absent_reason(card: ScoreCard, section: str) -> str | None:
    """Why a card has no figures for a section (None when it has them): no reference has the section
    (null metrics), or no scored prediction has it (its metrics are zeros that measure nothing)."""
    metrics = card.metrics.get(section)
    if not metrics or all(value is None for value in metrics.values()):
        return "no reference has one"
    missing = (card.counts.get(f"missing_{section}") or {}).get("prediction")
    if section != "report" and missing is not None and missing == card.counts.get("scored"):
        return "no prediction has one"
    return None


def _bar_group(
    ax,
    values: np.ndarray,
    errors: np.ndarray | None,
    labels: list[str],
    metrics: list[str],
    colours: list | None = None,
) -> None:
    """Grouped bars: x = metric, one bar per series; `errors` is (series, 2, metric) or None."""
    n_series = len(labels)
    width = 0.8 / max(n_series, 1)
    x = np.arange(len(metrics))
    colours = colours or plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(labels):
        offset = (i - (n_series - 1) / 2) * width
        yerr = errors[i] if errors is not None else None
        ax.bar(
            x + offset, values[i], width, label=label, color=colours[i % len(colours)], yerr=yerr, capsize=3
        )
    ax.set_xticks(x, metrics)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _errors(card: ScoreCard, section: str, values: np.ndarray, metrics: list[str]) -> np.ndarray:
    """(2, metric) distances from the point to the ci95 bounds; 0 where the card has no interval."""
    err = np.zeros((2, len(metrics)))
    for j, metric in enumerate(metrics):
        bounds = (card.ci95.get(section) or {}).get(metric)
        if bounds and np.isfinite(values[j]):
            # max(0, ...): a percentile interval need not contain the corpus-level point estimate.
            err[:, j] = [max(0.0, values[j] - bounds[0]), max(0.0, bounds[1] - values[j])]
    return err


def _no_bars(axes, message: str) -> None:
    """A row that says why it has nothing to draw, instead of bars at zero."""
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].text(0.5, 0.5, message, transform=axes[0].transAxes, ha="center", va="center", fontsize=11)
    for ax in axes[1:]:
        ax.set_visible(False)


def plot_metrics(
    cards: list[ScoreCard], out: Path, labels: list[str] | None = None, sections: list[str] | None = None
) -> Path:
    labels = labels or [card.name for card in cards]
    present = {s for card in cards for s in card.metrics}
    sections = sections or [s for s in SECTIONS if s in present] + sorted(present - set(SECTIONS))
    controls = [(card, label) for card, label in zip(cards, labels) if card.image_control]
    n_panels = len(sections) + (1 if controls else 0)
    fig, grid = plt.subplots(
        n_panels,
        len(SCALES),
        figsize=(14, 3.6 * n_panels),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"width_ratios": [len(m) for _, m in SCALES]},
    )

    for axes, section in zip(grid, sections):
        reasons = [absent_reason(card, section) for card in cards]
        if all(reasons):  # nothing to draw: say why instead of a row of zeros
            why = "; ".join(f"{label}: {reason}" for label, reason in zip(labels, reasons))
            _no_bars(axes, f"no {section} sections ({why})")
            axes[0].set_title(f"Section: {section}")
            continue
        # A card without the section keeps its colour and legend entry, with no bars.
        names = [f"{label} (no {section} sections)" if why else label for label, why in zip(labels, reasons)]
        for ax, (axis_label, metrics) in zip(axes, SCALES):
            values = np.array(
                [
                    [np.nan if why else _value(c.metrics, section, m) for m in metrics]
                    for c, why in zip(cards, reasons)
                ]
            )
            errors = np.stack([_errors(c, section, v, metrics) for c, v in zip(cards, values)])
            _bar_group(ax, values, errors if errors.any() else None, names, metrics)
            ax.set_ylim(bottom=0)  # scores are >= 0 (an all-zero CIDEr would otherwise centre on 0)
            ax.set_ylabel(axis_label)
        has_ci = any(section in c.ci95 and c.ci95[section] for c in cards)
        axes[0].set_title(f"Section: {section}" + (" (error bars: bootstrap 95% CI)" if has_ci else ""))
        axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))

    if controls:
        axes = grid[-1]
        series, names = [], []
        for card, label in controls:
            condition = card.image_control.get("condition", "control")
            for section in sections:
                if section in card.image_control["delta"] and not absent_reason(card, section):
                    series.append([_value(card.image_control["delta"], section, m) for m in STANDARD_METRICS])
                    names.append(f"{label} · {section} · {condition} images")
        title = "Image control: real images minus control images (> 0: the model uses the image)"
        if not series:
            _no_bars(axes, "no section to compare")
        for ax, (axis_label, metrics) in zip(axes, SCALES) if series else ():
            columns = [STANDARD_METRICS.index(m) for m in metrics]
            # A palette apart from the cards' colours: these bars are (card, section) pairs, not cards.
            _bar_group(
                ax, np.array(series)[:, columns], None, names, metrics, colours=list(plt.cm.Set2.colors)
            )
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_ylabel(f"{axis_label.split(' (')[0]} difference")
        axes[0].set_title(title)
        if series:
            axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))

    for ax in grid[-1]:
        ax.set_xlabel("metric")
    fig.suptitle("Report generation metrics on IU X-Ray", fontsize=12, weight="bold")
    return save_figure(fig, out, dpi=130)


# ---------------------------------------------------------------------------------------------------
# Clinical figure


def _clinical_errors(values: np.ndarray, bounds: list) -> np.ndarray:
    """(2, n) distances from each value to its [lo, hi] (0 where there is no interval)."""
    err = np.zeros((2, len(values)))
    for j, pair in enumerate(bounds):
        if pair and np.isfinite(values[j]):
            err[:, j] = [max(0.0, values[j] - pair[0]), max(0.0, pair[1] - values[j])]
    return err


def _bars(
    ax, names: list[str], values: np.ndarray, errors: np.ndarray | None, labels: list[str], colours=None
):
    """Grouped bars: x = names, one bar per series (rows of values); errors (series, 2, name) or None."""
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(names))
    colours = colours or plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(labels):
        offset = (i - (len(labels) - 1) / 2) * width
        yerr = errors[i] if errors is not None and errors[i].any() else None
        ax.bar(
            x + offset, values[i], width, label=label, color=colours[i % len(colours)], yerr=yerr, capsize=2
        )
    ax.set_xticks(x, names)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def plot_clinical(cards: list[ScoreCard], out: Path, labels: list[str] | None = None) -> Path:
    """Per-observation F1 (with intervals), the summary F1s, and their image-control differences."""
    labels = labels or [card.name for card in cards]
    pairs = [
        (c, label) for c, label in zip(cards, labels) if c.clinical and c.clinical.get("per_observation")
    ]
    if not pairs:
        raise InputError(
            "no card has a clinical block with per-observation scores (scored with --labeler none?)"
        )
    controls = [
        (c, label) for c, label in pairs if "clinical" in ((c.image_control or {}).get("delta") or {})
    ]
    mosaic = [["per", "per"], ["summary", "delta" if controls else "summary"]]
    fig, axes = plt.subplot_mosaic(mosaic, figsize=(15, 9), layout="constrained", height_ratios=[1.2, 1])
    names = [label for _, label in pairs]

    per_values = np.array([[c.clinical["per_observation"][o]["f1"] for o in OBSERVATIONS] for c, _ in pairs])
    per_ci = [(c.clinical.get("ci95") or {}).get("per_observation") or {} for c, _ in pairs]
    per_errors = np.stack(
        [
            _clinical_errors(v, [ci.get(o, {}).get("f1") for o in OBSERVATIONS])
            for v, ci in zip(per_values, per_ci)
        ]
    )
    ax = axes["per"]
    # Tick labels carry the first card's reference positives (n): an F1 of 0 at n=0 means "nothing to find".
    first = pairs[0][0].clinical["per_observation"]
    ticks = [f"{o.replace(' ', chr(10), 1)}\nn={first[o]['tp'] + first[o]['fn']}" for o in OBSERVATIONS]
    _bars(ax, ticks, per_values, per_errors, names)
    width = 0.8 / len(pairs)
    for i, (card, _) in enumerate(pairs):  # neither side has the observation: F1 is undefined, shown 0
        for j, o in enumerate(OBSERVATIONS):
            v = card.clinical["per_observation"][o]
            if v["tp"] + v["fp"] + v["fn"] == 0:
                x = j + (i - (len(pairs) - 1) / 2) * width
                ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
    ax.tick_params(axis="x", labelsize=8)
    settings = {(c.clinical.get("labeler"), c.clinical.get("uncertain")) for c, _ in pairs}
    setting = "; ".join(
        f"{LABELER_NAMES.get(lab, lab)}, uncertain = {unc}" for lab, unc in sorted(settings, key=str)
    )
    has_ci = bool(per_errors.any())
    ax.set_title(f"CheXpert-14 F1 per observation ({setting}; positive vs rest)" + (
        "; error bars: bootstrap 95% CI" if has_ci else ""))  # fmt: skip
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    keys = list(F1_KEYS)
    values = np.array([[clinical_value(c, k)[0] or 0.0 for k in keys] for c, _ in pairs])
    errors = np.stack(
        [_clinical_errors(v, [clinical_value(c, k)[1] for k in keys]) for v, (c, _) in zip(values, pairs)]
    )
    ax = axes["summary"]
    _bars(ax, [k.replace("f1_", "F1 ").replace("_", " ") for k in keys], values, errors, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    labelers = ", ".join(
        sorted(
            {LABELER_NAMES.get(c.clinical.get("labeler"), str(c.clinical.get("labeler"))) for c, _ in pairs}
        )
    )
    ax.set_title(f"Micro / macro F1 over 14 and over 5 observations; labels: {labelers}")

    if controls:
        ax = axes["delta"]
        series = [[c.image_control["delta"]["clinical"].get(k, np.nan) for k in keys] for c, _ in controls]
        conditions = [
            f"{label} · {c.image_control.get('condition', 'control')} images" for c, label in controls
        ]
        _bars(ax, [k.replace("f1_", "F1 ").replace("_", " ") for k in keys], np.array(series), None, conditions,
              colours=list(plt.cm.Set2.colors))  # fmt: skip
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_ylabel("F1 difference (real − control)")
        ax.set_title("Image control: clinical F1 with real minus control images")
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Clinical efficacy on IU X-Ray (CheXpert-14 labels)", fontsize=12, weight="bold")
    return save_figure(fig, out, dpi=130)


def clinical_path(config: MetricsPlotConfig) -> Path:
    if config.clinical_out:
        return Path(config.clinical_out)
    out = Path(config.out)
    return out.with_name(f"{out.stem}_clinical{out.suffix or '.png'}")


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    cards = [load_scores(path) for path in config.scores]
    out = plot_metrics(cards, Path(config.out), config.labels, config.sections)
    print(f"wrote {out}")
    if any(card.clinical and card.clinical.get("per_observation") for card in cards):
        print(f"wrote {plot_clinical(cards, clinical_path(config), config.labels)}")
    elif config.clinical_out:
        raise InputError("--clinical_out: no card has a clinical block (scored with --labeler none?)")
