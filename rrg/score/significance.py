"""Paired significance between runs on the same studies: a paired-bootstrap interval of each difference and an
approximate-randomization p-value, for every metric the metric cards hold.

RadEval's `compare_systems` semantics: the first run is the baseline, every other run is compared with it;
a trial swaps the two runs' outputs of each study with probability 1/2 and recomputes both corpus scores;
p = (trials whose |difference| >= the observed |difference|) / trials. Identical runs give p = 1.

Corpus-level metrics (BLEU, METEOR, CIDEr, micro-F1) are recomputed exactly on every resample and every
trial without re-scoring any text: each is a function of per-study sufficient statistics summed with
weights (BLEU's clipped n-gram counts and lengths, METEOR's match statistics, CIDEr's n-gram tables, the
CheXpert confusion counts; rrg.score.card and rrg.score.clinical.f1 already compute the card's bootstrap this way).
Both runs' studies are stacked into one table of 2N rows; a system is a weighting of those rows:
baseline = [1, 0], other = [0, 1], a bootstrap resample w gives [w, 0] and [0, w], a randomization trial
with swaps s gives [1 - s, s] and [s, 1 - s]. CIDEr's document frequencies come from the references, which
both halves share, so they too are exact for every weighting. Work is done in blocks of rows: memory stays
bounded whatever the number of trials.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rrg.data.sections import parse_sections
from rrg.io import InputError
from rrg.score.card import (
    SectionScorer,
    _references,
    _study_id,
    percentile_interval,
    read_predictions,
    resample_weights,
)
from rrg.score.clinical.f1 import CLINICAL_NAMES, LABELER_NAMES
from rrg.score.meteor import MeteorScorer
from rrg.score.ngram import SECTIONS, normalize_report

BLOCK_ROWS = 256  # weightings evaluated at once
TIE_TOLERANCE = 1e-12  # |differences| this close count as equal (float summation order, not a difference)


@dataclass
class Run:
    name: str
    source: str
    studies: list[str]
    predictions: dict[str, str]
    references: dict[str, list[str]]


def predictions_path(path: str | os.PathLike) -> Path:
    """A predictions file, or a run folder's predictions.jsonl."""
    path = Path(path)
    if path.is_dir():
        path = path / "predictions.jsonl"
    if not path.is_file():
        raise InputError(
            f"{path}: file not found (a predictions JSONL or a run folder holding predictions.jsonl)"
        )
    return path


def read_run(spec: str) -> Run:
    """`NAME=PATH` or `PATH` (named by its folder); the first line of each study, as the score card counts."""
    name, _, rest = spec.partition("=")
    if not rest or Path(spec).exists():
        name, rest = "", spec
    path = predictions_path(rest)
    if not name:
        name = path.parent.name if path.name == "predictions.jsonl" else path.stem
    run = Run(name=name or str(path), source=str(path), studies=[], predictions={}, references={})
    for record in read_predictions(path):
        study = _study_id(record)
        if study in run.predictions:
            continue
        run.studies.append(study)
        run.predictions[study] = record["prediction"]
        run.references[study] = _references(record)
    return run


def check_same_studies(runs: Sequence[Run]) -> None:
    """Every run must hold the baseline's studies with the same references; the ids that differ are named."""
    if len(runs) < 2:
        raise InputError("give two or more runs to compare (the first is the baseline)")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise InputError(f"run names repeat: {names} (name them NAME=PATH)")
    base = runs[0]
    for run in runs[1:]:
        missing = [s for s in base.studies if s not in run.predictions]
        extra = [s for s in run.studies if s not in base.predictions]
        if missing or extra:
            raise InputError(
                f"{run.source}: not the studies of {base.source}: {len(missing)} missing {missing[:10]}, "
                f"{len(extra)} extra {extra[:10]}"
            )
        changed = [s for s in base.studies if run.references[s] != base.references[s]]
        if changed:
            raise InputError(
                f"{run.source}: {len(changed)} study(ies) have other references than in {base.source}: {changed[:10]}"
            )


# ---------------------------------------------------------------- metric families on stacked rows


Family = Callable[[np.ndarray], dict[str, np.ndarray]]  # (B, 2N) weights -> {metric: (B,)}


def section_texts(
    run: Run, studies: Sequence[str], normalize: bool
) -> dict[str, tuple[list[str], list[list[str]], list[int]]]:
    """Per section: hypotheses, references and the positions (in `studies`) of the studies it scores,
    parsed and cleaned exactly as rrg.score.card.score_records does."""
    clean = normalize_report if normalize else str
    out = {s: ([], [], []) for s in SECTIONS}
    for i, study in enumerate(studies):
        pred = parse_sections(run.predictions[study], keep_spacing=not normalize)
        refs = [parse_sections(r, keep_spacing=not normalize) for r in run.references[study]]
        out["report"][0].append(clean(pred.body))
        out["report"][1].append([clean(r.body) for r in refs])
        out["report"][2].append(i)
        for section in ("findings", "impression"):
            ref_texts = [getattr(r, section) for r in refs if getattr(r, section) is not None]
            if ref_texts:
                out[section][0].append(clean(getattr(pred, section) or ""))
                out[section][1].append([clean(r) for r in ref_texts])
                out[section][2].append(i)
    return out


def ngram_family(
    a: Run, b: Run, studies: Sequence[str], meteor: MeteorScorer | None, normalize: bool
) -> Family:
    n = len(studies)
    texts_a, texts_b = section_texts(a, studies, normalize), section_texts(b, studies, normalize)
    scorers, columns = {}, {}
    for section in SECTIONS:
        hyps_a, refs, rows = texts_a[section]
        if not rows:
            continue
        scorers[section] = SectionScorer.build(hyps_a + texts_b[section][0], refs + refs, meteor)
        columns[section] = np.asarray(rows + [n + r for r in rows])

    def values(weights: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for section, scorer in scorers.items():
            for metric, v in scorer.resampled(weights[:, columns[section]]).items():
                out[f"{section} {metric}"] = v
        return out

    return values


def clinical_family(pred_a: np.ndarray, pred_b: np.ndarray, ref: np.ndarray, labeler: str) -> Family:
    from rrg.score.clinical.f1 import confusion_counts, summary_scores

    pred, refs = np.vstack([pred_a, pred_b]), np.vstack([ref, ref])
    label = LABELER_NAMES.get(labeler, labeler)

    def values(weights: np.ndarray) -> dict[str, np.ndarray]:
        scores = summary_scores(confusion_counts(pred, refs, weights))
        return {f"{CLINICAL_NAMES[k]}, {label}": v for k, v in scores.items()}

    return values


def mean_family(name: str, per_study_a: np.ndarray, per_study_b: np.ndarray) -> Family:
    """A metric that is the mean over studies of a per-study score (ReXrank's BLEU-2, RadEval's per-study ones)."""
    stacked = np.concatenate([per_study_a, per_study_b])

    def values(weights: np.ndarray) -> dict[str, np.ndarray]:
        return {name: weights @ stacked / weights.sum(axis=1)}

    return values


# ---------------------------------------------------------------- the test


def evaluate(families: Sequence[Family], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every family's metrics for each row of weights, in blocks of BLOCK_ROWS rows."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(weights), BLOCK_ROWS):
        block = weights[start : start + BLOCK_ROWS]
        for family in families:
            for metric, v in family(block).items():
                parts.setdefault(metric, []).append(np.asarray(v, dtype=float))
    return {m: np.concatenate(v) for m, v in parts.items()}


@dataclass
class PairResult:
    system: str
    metrics: dict[str, dict] = field(default_factory=dict)


def compare_pair(
    families: Sequence[Family], n: int, *, bootstrap: int, permutations: int, seed: int, name: str
) -> PairResult:
    """Observed difference (system - baseline), its paired-bootstrap 95% interval, the AR p-value."""
    ones, zeros = np.ones((1, n)), np.zeros((1, n))
    point = evaluate(families, np.vstack([np.hstack([ones, zeros]), np.hstack([zeros, ones])]))
    w = resample_weights(n, bootstrap, seed)
    z = np.zeros_like(w)
    boot = evaluate(families, np.vstack([np.hstack([w, z]), np.hstack([z, w])]))
    swaps = np.random.default_rng(seed + 1).integers(0, 2, size=(permutations, n)).astype(float)
    rand = evaluate(families, np.vstack([np.hstack([1 - swaps, swaps]), np.hstack([swaps, 1 - swaps])]))
    result = PairResult(system=name)
    for metric, values in point.items():
        base, system = float(values[0]), float(values[1])
        if np.isnan(base) or np.isnan(system):
            continue
        observed = system - base
        diffs = boot[metric][bootstrap:] - boot[metric][:bootstrap]
        trial = np.abs(rand[metric][permutations:] - rand[metric][:permutations])
        tie = TIE_TOLERANCE * max(1.0, abs(observed))
        result.metrics[metric] = {
            "baseline": base,
            "system": system,
            "difference": observed,
            "ci95": percentile_interval(diffs),
            "p_value": float(np.mean(trial >= abs(observed) - tie)),
        }
    return result


def compare_runs(
    runs: Sequence[Run],
    *,
    bootstrap: int = 1000,
    permutations: int = 1000,
    seed: int = 0,
    labeler: str = "offline",
    uncertain: str = "positive",
    meteor: bool = True,
    normalize: bool = True,
) -> dict:
    """Every run after the first against the first, on the first run's studies (in its order)."""
    from rrg.score import rexrank_bleu
    from rrg.score.clinical.f1 import binarize, check_backends, labels_for

    check_same_studies(runs)
    check_backends(labeler, False, uncertain)
    base = runs[0]
    studies = base.studies
    n = len(studies)
    first_refs = [base.references[s][0] for s in studies]
    if labeler != "none":
        ref_labels = binarize(labels_for(first_refs, labeler), uncertain)
        run_labels = {
            r.name: binarize(labels_for([r.predictions[s] for s in studies], labeler), uncertain)
            for r in runs
        }
    bleu2 = {r.name: rexrank_bleu.per_study([r.predictions[s] for s in studies], first_refs) for r in runs}
    comparisons = []
    scorer = MeteorScorer() if meteor else None
    try:
        for run in tqdm(runs[1:], desc="comparing", unit="run", disable=None):
            families = [ngram_family(base, run, studies, scorer, normalize)]
            families.append(mean_family(rexrank_bleu.NAME, bleu2[base.name], bleu2[run.name]))
            if labeler != "none":
                families.append(
                    clinical_family(run_labels[base.name], run_labels[run.name], ref_labels, labeler)
                )
            pair = compare_pair(
                families, n, bootstrap=bootstrap, permutations=permutations, seed=seed, name=run.name
            )
            comparisons.append({"system": pair.system, "source": run.source, "metrics": pair.metrics})
    finally:
        if scorer is not None:
            scorer.close()
    return {
        "baseline": base.name,
        "baseline_source": base.source,
        "studies": n,
        "comparisons": comparisons,
        "settings": {
            "bootstrap": bootstrap,
            "permutations": permutations,
            "seed": seed,
            "labeler": labeler,
            "uncertain": uncertain,
            "meteor": meteor,
            "normalize": normalize,
        },
        "notes": [
            "difference = system - baseline; ci95: percentile interval of the paired bootstrap (the same study "
            "resamples for both runs); p_value: approximate randomization as RadEval's compare_systems "
            "(two-sided, |trial difference| >= |observed difference|, ties within 1e-12)",
            "corpus metrics recomputed exactly per resample and trial from per-study sufficient statistics",
        ],
    }


# ---------------------------------------------------------------- reports


def format_markdown(result: dict, alpha: float = 0.05) -> str:
    """One table per comparison: metric | baseline | system | difference [95% CI] | p."""
    lines = [
        f"# Paired comparison against {result['baseline']} ({result['studies']} studies)",
        "",
        f"Paired bootstrap ({result['settings']['bootstrap']} resamples) and approximate randomization "
        f"({result['settings']['permutations']} trials, RadEval's compare_systems semantics); * p < {alpha}.",
    ]
    for comparison in result["comparisons"]:
        lines += [
            "",
            f"## {comparison['system']} vs {result['baseline']}",
            "",
            "| metric | baseline | system | difference [95% CI] | p |",
            "|---|---|---|---|---|",
        ]
        for metric, m in comparison["metrics"].items():
            mark = "*" if m["p_value"] < alpha else ""
            lines.append(
                f"| {metric} | {m['baseline']:.4f} | {m['system']:.4f} | {m['difference']:+.4f} "
                f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] | {m['p_value']:.4f}{mark} |"
            )
    return "\n".join(lines) + "\n"


def plot_differences(result: dict, out: str | os.PathLike, alpha: float = 0.05) -> Path:
    """A forest plot per comparison: each metric's difference with its 95% interval, significant in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rrg.report.results import save_figure

    comparisons = result["comparisons"]
    n_metrics = max((len(c["metrics"]) for c in comparisons), default=1)
    fig, axes = plt.subplots(
        1,
        len(comparisons),
        figsize=(6.5 * len(comparisons), 0.28 * n_metrics + 1.6),
        squeeze=False,
        sharey=True,
    )
    for ax, comparison in zip(axes[0], comparisons):
        names = list(comparison["metrics"])
        y = np.arange(len(names))[::-1]
        for yi, name in zip(y, names):
            m = comparison["metrics"][name]
            colour = "#1d4ed8" if m["p_value"] < alpha else "#9ca3af"
            lo, hi = m["ci95"]
            ax.plot([lo, hi], [yi, yi], color=colour, lw=2)
            ax.plot([m["difference"]], [yi], "o", color=colour, ms=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, names, fontsize=7)
        ax.set_title(f"{comparison['system']} - {result['baseline']}", fontsize=9)
        ax.set_xlabel(f"difference (95% paired-bootstrap CI); blue: p < {alpha}", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out, dpi=130)
