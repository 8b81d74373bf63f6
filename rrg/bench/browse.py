"""How fast the case browser is on a test set of the reference protocol's size (1,251 studies).

    python scripts/browse_benchmark.py [--studies 1251] [--loads 3] [--json results/browse_benchmark.json]

Builds a synthetic run in a temporary folder: real IU X-Ray reports (report.csv of the shared data) as
references, the same reports shuffled among the studies as predictions, another shuffle as a blank-image
control and a third as a second run to compare with; the 5 real X-rays of the shared data stand in for every
study's views. Then it times `python plot/browse.py` (the whole command, imports included) for one run and
for two runs side by side, and loads each page in headless Chromium: navigationStart -> load event, time to
the first rendered studies (the page's "cases-rendered" mark), and how long filtering, sorting and rendering
every study take in the page. Prints a table; --json keeps the numbers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rrg.cli import exits_on_input_error, flag, parse_flags, shared_data_dir
from rrg.io import InputError, atomic_write_json
from rrg.report.browser import headless_chromium

REPO = Path(__file__).resolve().parents[2]
QUESTION = "You are a radiologist. Write the report for this chest X-ray: a Findings section, then an Impression section."


def write_synthetic_runs(out: Path, shared: Path, n_studies: int, seed: int) -> tuple[Path, Path, Path]:
    """(run, compare run, image folder): predictions.jsonl + scores.json (+ a blank control for the first)."""
    table = shared / "iu_xray" / "report.csv"
    images = sorted((shared / "iu_xray" / "images").glob("*.png"))
    if not table.exists() or not images:
        raise InputError(
            f"{table} or the X-rays beside it not found: set RRG_SHARED_DATA to the shared data folder"
        )
    reports = pd.read_csv(table).sample(n=n_studies, random_state=seed)
    studies = [str(uid) for uid in reports["uid"]]
    references = [
        f"Findings: {f} Impression: {i}" for f, i in zip(reports["findings"], reports["impression"])
    ]
    rng = random.Random(seed)

    def shuffled() -> list[str]:
        texts = references[:]
        rng.shuffle(texts)
        return texts

    def write(folder: Path, predictions: list[str], control: list[str] | None) -> Path:
        folder.mkdir(parents=True)
        lines = []
        for k, (study, reference) in enumerate(zip(studies, references)):
            views = [images[(2 * k) % len(images)].name, images[(2 * k + 1) % len(images)].name]
            lines.append(
                {"id": study, "study_id": study, "images": views, "prompt": QUESTION, "reference": reference}
            )
        for name, texts in (("predictions.jsonl", predictions), ("predictions.blank.jsonl", control)):
            if texts is not None:
                body = "".join(json.dumps({**line, "prediction": t}) + "\n" for line, t in zip(lines, texts))
                (folder / name).write_text(body, encoding="utf-8")
        card = {"metrics": {"report": {"BLEU-4": None}}, "counts": {"lines": n_studies, "scored": n_studies}}
        if control is not None:
            card["image_control"] = {
                "condition": "blank",
                "predictions": str(folder / "predictions.blank.jsonl"),
                "delta": {"report": {"BLEU-4": None}},
            }
        atomic_write_json(folder / "scores.json", card)
        return folder

    return (
        write(out / "shuffled", shuffled(), shuffled()),
        write(out / "shuffled_2", shuffled(), None),
        images[0].parent,
    )


def build_seconds(runs: list[Path], images: Path, page: Path) -> float:
    args = [
        sys.executable,
        str(REPO / "plot" / "browse.py"),
        str(runs[0]),
        "--out",
        str(page),
        "--image_dir",
        str(images),
    ]
    if len(runs) > 1:
        args += ["--compare", *map(str, runs[1:])]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return time.perf_counter() - start


IN_PAGE = """
const done = arguments[arguments.length - 1];
const nav = performance.getEntriesByType("navigation")[0];
const mark = performance.getEntriesByName("cases-rendered")[0];
function timed(f) { const t = performance.now(); f(); return performance.now() - t; }
function set(id, value) {
  const e = document.getElementById(id); e.value = value;
  e.dispatchEvent(new Event(e.tagName === "INPUT" ? "input" : "change"));
}
const result = {load_ms: nav.loadEventEnd, first_render_ms: mark ? mark.startTime : null,
                shown_first: document.querySelectorAll("article.case").length};
result.search_ms = timed(() => set("search", "effusion"));
result.search_shown = Number(document.getElementById("count").textContent.split(" ")[0]);
set("search", "");
set("metric", "ROUGE-L");
result.sort_ms = timed(() => set("sort", "score"));
const more = document.getElementById("more");
result.render_all_ms = timed(() => { while (!more.hidden) more.click(); });
result.shown_all = document.querySelectorAll("article.case").length;
requestAnimationFrame(() => done(result));
"""


def measure_page(page: Path, loads: int) -> list[dict]:
    out = []
    with headless_chromium(1400, 1000) as driver:
        driver.set_script_timeout(120)
        for _ in range(loads):
            driver.get(page.resolve().as_uri())
            out.append(driver.execute_async_script(IN_PAGE))
            severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            if severe:
                raise InputError(f"{page}: console errors: {severe[:3]}")
    return out


def summary(values: list[float]) -> str:
    values = sorted(values)
    return f"{values[len(values) // 2]:.0f} (min {values[0]:.0f}, max {values[-1]:.0f})"


@dataclass
class BrowseBenchmarkSettings:
    studies: int = flag(1251, "studies in the synthetic run", ge=1)
    loads: int = flag(3, "page loads timed per page", ge=1)
    seed: int = flag(0, "sampling and shuffling seed", ge=0)
    json: str | None = flag(None, "also write the numbers to this JSON file")
    shared_data: Path = flag(
        shared_data_dir(), "the shared data folder ($RRG_SHARED_DATA, else ../shared/data)"
    )


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = parse_flags(BrowseBenchmarkSettings, argv, description=__doc__)
    # The load average says how busy the machine was: timings on a shared box vary with it.
    results = {
        "studies": args.studies,
        "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "pages": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        run, other, images = write_synthetic_runs(Path(tmp), args.shared_data, args.studies, args.seed)
        for label, runs in (("one run + blank control", [run]), ("two runs side by side", [run, other])):
            page = Path(tmp) / "pages" / f"{len(runs)}" / "index.html"
            seconds = build_seconds(runs, images, page)
            loads = measure_page(page, args.loads)
            results["pages"][label] = {
                "build_s": seconds,
                "page_mb": page.stat().st_size / 2**20,
                "loads": loads,
            }
            print(
                f"\n{label}: {args.studies} studies, page {page.stat().st_size / 2**20:.1f} MB, built in {seconds:.1f} s "
                f"(python plot/browse.py, imports included)"
            )
            for key, what in (
                ("load_ms", "navigationStart -> load event"),
                ("first_render_ms", "navigationStart -> first studies rendered"),
                ("search_ms", "text search (filter + re-render)"),
                ("sort_ms", "sort by ROUGE-L (+ re-render)"),
                ("render_all_ms", f"render all {args.studies} studies"),
            ):
                print(f"  {what:<44} {summary([load[key] for load in loads])} ms over {len(loads)} loads")
            print(
                f"  studies rendered at first: {loads[0]['shown_first']}, after 'show more': {loads[0]['shown_all']}"
            )
    results["load_average_after"] = os.getloadavg()
    print(
        f"\n{os.cpu_count()} CPUs, load average before/after: {results['load_average_before'][0]:.1f}/"
        f"{results['load_average_after'][0]:.1f}"
    )
    if args.json:
        atomic_write_json(args.json, results)
