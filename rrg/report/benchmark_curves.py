"""Loss curves of the training configurations of one benchmark run (scripts/benchmark.py's results JSON).

    python plot/benchmark_curves.py --results results/benchmark-h200.json --out results/figures/benchmark_curves.png

Top: each configuration's loss at every optimizer step (all configurations of a run see the same samples in
the same order from the same LoRA init, so the curves differ only by the configuration). Bottom: each one's
relative difference from the first configuration, step by step: the "within 1% of the default" check, as a picture.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.io import InputError
from rrg.report.curves import relative_differences
from rrg.report.results import save_figure


@dataclass
class BenchCurvesConfig:
    results: str = flag(help="A results JSON of scripts/benchmark.py.", nonempty=True)
    out: str = flag("runs/figures/benchmark_curves.png", "Output PNG.", nonempty=True)
    phase: str = flag("lora", "Whose configurations to plot: lora or qlora.", choices=["lora", "qlora"])


def label(config: dict, first: dict) -> str:
    """A configuration (scripts/benchmark.py's TrainSpec fields) by what sets it apart from the first one."""
    if config == first:
        return f"micro-batch {config.get('micro_batch', '?')} (first)"
    parts = []
    for key, value in config.items():
        if first.get(key) != value:
            parts.append(f"{key} {value}" if not isinstance(value, bool) else key if value else f"no {key}")
    return ", ".join(parts)


def curves(report: dict, phase: str, source: str) -> tuple[list[tuple[str, list[float]]], bool]:
    """(label, per-step losses) of each configuration of `phase` with losses, and whether the run recorded
    that they all saw the same samples in the same order; InputError if fewer than two, or if they did not."""
    rows = [r for r in report.get(phase, []) if r.get("losses")]
    if len(rows) < 2:
        raise InputError(
            f"{source}: {phase} holds {len(rows)} configuration(s) with losses; two are compared"
        )
    orders = {r.get("sample_order_sha256") for r in rows}
    if len(orders) > 1:
        raise InputError(
            f"{source}: the {phase} configurations saw different samples: their curves do not compare"
        )
    first = rows[0].get("config", {})
    return [(label(r.get("config", {}), first), r["losses"]) for r in rows], None not in orders


def plot(lines: list[tuple[str, list[float]]], title: str):
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, height_ratios=(2, 1))
    for i, (name, losses) in enumerate(lines):
        top.plot(range(1, len(losses) + 1), losses, marker=".", linewidth=1, label=name, color=f"C{i}")
    top.set_ylabel("training loss")
    top.set_title(title)
    top.legend()
    base_name, base = lines[0]
    for i, (name, losses) in enumerate(lines[1:], start=1):
        diffs = [100 * d for d in relative_differences(base, losses)]
        bottom.plot(range(1, len(diffs) + 1), diffs, marker=".", linewidth=1, label=name, color=f"C{i}")
    bottom.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="1%")
    bottom.set_ylabel(f"|difference| from\n{base_name} (%)")
    bottom.set_xlabel("optimizer step")
    bottom.legend()
    fig.tight_layout()
    return fig


@exits_on_input_error
def main() -> None:
    cfg = parse_flags(BenchCurvesConfig, description=__doc__)
    try:
        report = json.loads(Path(cfg.results).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{cfg.results}: cannot read a results JSON ({e})") from None
    lines, same_samples = curves(report, cfg.phase, cfg.results)
    seen = "same samples, same init" if same_samples else "sample order not recorded"
    title = f"{cfg.phase} loss curves, {report.get('gpu', 'GPU')} ({seen})"
    print(f"wrote {save_figure(plot(lines, title), cfg.out, dpi=120)}")
