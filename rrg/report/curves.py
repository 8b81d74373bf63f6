"""Loss curves compared step by step: the check that a faster setting stays within 1% of the default
(scripts/benchmark.py) and its figure (plot/benchmark_curves.py). Kept apart from rrg.report.results, which
imports the scorers: the benchmark runs on GPU boxes without them."""

from __future__ import annotations


def relative_differences(reference: list[float], values: list[float]) -> list[float]:
    """|value - reference| / |reference| step by step, over the shorter of the two."""
    return [abs(v - r) / abs(r) for r, v in zip(reference, values)]
