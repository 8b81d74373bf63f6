"""Time the offline CheXpert-14 labeler: `python scripts/bench_labeler.py --data_dir data/iu_xray`.

Labels the findings + impression of the first N reports (default 1,251, the size of the reference
protocol's test split) of indiana_reports.csv that have text, and prints the time of building the
spaCy/negspacy pipeline, of labelling the reports (best of --repeats runs) and of labelling each
report's whole text and both sections (what a case browser shows). One process, one thread.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.io import InputError
from rrg.score.clinical.labeler import build_pipeline, label_report_sections, label_reports


@dataclass
class BenchLabelerArgs:
    data_dir: Path = flag(Path("data/iu_xray"), "Folder of indiana_reports.csv.")
    reports: int = flag(1251, "Reports to label.", ge=1)
    repeats: int = flag(3, "Timed runs; the best is reported.", ge=1)


def parse_args(argv: list[str] | None = None) -> BenchLabelerArgs:
    return parse_flags(BenchLabelerArgs, argv, description=__doc__)


def load_texts(data_dir: Path, n: int) -> list[str]:
    path = data_dir / "indiana_reports.csv"
    if not path.is_file():
        raise InputError(f"{path}: file not found (pass --data_dir, the folder of indiana_reports.csv)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    texts = [
        f"Findings: {f.strip()} Impression: {i.strip()}"
        for f, i in zip(table["findings"], table["impression"])
        if f.strip() or i.strip()
    ]
    if len(texts) < n:
        raise InputError(f"{path}: only {len(texts)} reports with text, {n} asked for")
    return texts[:n]


@exits_on_input_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    texts = load_texts(args.data_dir, args.reports)
    start = time.perf_counter()
    build_pipeline()
    build = time.perf_counter() - start
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        label_reports(texts)
        runs.append(time.perf_counter() - start)
    start = time.perf_counter()
    label_report_sections(texts)
    sections = time.perf_counter() - start
    result = {
        "reports": len(texts),
        "pipeline_build_s": round(build, 2),
        "label_reports_s": round(min(runs), 2),
        "label_reports_runs_s": [round(r, 2) for r in runs],
        "label_report_sections_s": round(sections, 2),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(
        f"{len(texts)} reports: pipeline built in {build:.2f} s; labelled in {min(runs):.2f} s "
        f"(best of {args.repeats}: {', '.join(f'{r:.2f}' for r in runs)} s; "
        f"{len(texts) / min(runs):.0f} reports/s); report + findings + impression in {sections:.2f} s; "
        f"{os.cpu_count()} CPUs visible"
    )
    return result


if __name__ == "__main__":
    main()
