"""A static case browser: one HTML page, study by study, of one run or several side by side.

    python plot/browse.py results/lora-test_report --out runs/browse/index.html
    python plot/browse.py results/lora --compare results/zero_shot --image_dir data/images \
        --entries data/test_report.json --out runs/browse/index.html      # compare two runs

Each run's card is its scores.json (the eval run's) or predictions.scores.json (eval/score.py's default).

Per study: the views, the indication, the reference, each run's prediction with the words it shares with
the reference highlighted, its BLEU-4 and ROUGE-L (pycocoevalcap, R2Gen-normalised, as eval/score.py
scores the report), the image-control prediction when eval made one, and clinical labels per observation
when given. The page filters (text, score range, observation) and sorts (score, gap between runs,
clinical disagreements), and j/k or the arrow keys move from study to study.

The page is one file with no server and no network: the data sits in a <script type="application/json">
tag, the script and style inline; images are links relative to the page (or embedded thumbnails with
--thumbnails), so the page opens from disk or any static host as long as the images keep their place.
"""

from __future__ import annotations

import base64
import io
import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.entries import DEFAULT_IMAGE_DIR, verify_image
from rrg.data.images import read_image
from rrg.io import InputError, atomic_write_text
from rrg.report.cases import STUDY_METRICS, Run, build_cases, load_run
from rrg.report.results import format_value
from rrg.score.clinical.f1 import UNCERTAIN_AS
from rrg.score.clinical.lexicon import OBSERVATIONS
from rrg.score.ngram import METRICS, SECTIONS


class UnreadableImage(Exception):
    """An image of a case PIL cannot read; its message says which and why."""


TEMPLATES = Path(__file__).resolve().parent / "templates"
LABELS = ("positive", "negative", "uncertain", None)
PAGE_SIZE = 40  # cards rendered at a time; more as the reader scrolls


def clinical_labels(runs: list[Run]) -> dict:
    """Per-study CheXpert-14 labels of the reference and of every run's prediction (rrg.score.clinical.labeler, the
    scorer's offline labeler, on the whole report): {study_id: {"reference": {observation: "positive" |
    "negative" | "uncertain" | None}, "predictions": {run_name: {observation: ...}}}}.

    Studies are those of the first run, as on the page; the reference is the first run's (the scored one).
    """
    from rrg.score.clinical.labeler import label_reports

    studies = list(runs[0].studies)
    texts = [_reference_text(runs[0].studies[s]) for s in studies]
    for run in runs:
        texts += [run.studies[s]["prediction"] if s in run.studies else "" for s in studies]
    labels = label_reports(texts, progress=True)
    n = len(studies)
    out = {}
    for i, study in enumerate(studies):
        predictions = {
            run.name: labels[n * (k + 1) + i] for k, run in enumerate(runs) if study in run.studies
        }
        out[study] = {"reference": labels[i], "predictions": predictions}
    return out


def _reference_text(record: dict) -> str:
    reference = record["reference"]
    return reference if isinstance(reference, str) else reference[0]


def check_clinical(clinical: dict, study_ids: list[str], run_names: list[str]) -> list[str]:
    """Validate clinical labels (InputError naming the field) and return their observations in order."""
    if not isinstance(clinical, dict):
        raise InputError("clinical labels: expected an object of study id -> labels")
    known_studies, known_runs = set(study_ids), set(run_names)
    seen: set[str] = set()

    def labels(table: object, where: str) -> None:
        if not isinstance(table, dict):
            raise InputError(f"clinical labels: {where} must be an object of observation -> label")
        for observation, label in table.items():
            if label not in LABELS:
                raise InputError(f"clinical labels: {where}.{observation} is {label!r}, not one of {LABELS}")
            seen.add(observation)

    for study, entry in clinical.items():
        if study not in known_studies:
            raise InputError(f"clinical labels: study {study!r} is not in the first run")
        if not isinstance(entry, dict):
            raise InputError(f"clinical labels: {study} must be an object")
        labels(entry.get("reference", {}), f"{study}.reference")
        predictions = entry.get("predictions", {})
        if not isinstance(predictions, dict):
            raise InputError(f"clinical labels: {study}.predictions must be an object of run name -> labels")
        for run, table in predictions.items():
            if run not in known_runs:
                raise InputError(f"clinical labels: {study}.predictions names unknown run {run!r}")
            labels(table, f"{study}.predictions.{run}")
    order = {name: i for i, name in enumerate(OBSERVATIONS)}
    return sorted(seen, key=lambda o: (order.get(o, len(order)), o))


def image_source(path: str | None, page_dir: Path, thumbnail_px: int) -> str | None:
    """A link relative to the page folder (resolved), or with thumbnail_px > 0 a JPEG thumbnail embedded as a
    data URI. An image PIL cannot read (truncated, not an image, over its decompression-bomb limit) raises
    UnreadableImage: page_data shows it as a counted placeholder."""
    if path is None:
        return None
    if reason := verify_image(Path(path)):
        raise UnreadableImage(reason)
    if thumbnail_px > 0:
        try:
            image = read_image(path)
        except InputError as e:  # verify() passed but decoding failed: the same verdict
            raise UnreadableImage(f"unreadable image {e}") from None
        image.thumbnail((thumbnail_px, thumbnail_px))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    relative = os.path.relpath(Path(path).resolve(), page_dir)
    return urllib.parse.quote(Path(relative).as_posix())


def run_summary(run: Run) -> dict:
    """What the header shows of a run: its scores card, counts and image-control difference."""
    card = run.card or {}
    control = card.get("image_control") or {}
    return {
        "name": run.name,
        "predictions": str(run.predictions),
        "studies": len(run.studies),
        "metrics": card.get("metrics") or {},
        "ci95": card.get("ci95") or {},
        "counts": card.get("counts") or {},
        "settings": card.get("settings") or {},
        "control": {"condition": control.get("condition"), "delta": control.get("delta") or {}}
        if control
        else None,
    }


def page_data(
    runs: list[Run],
    out: Path,
    *,
    entries: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    thumbnail_px: int = 0,
    clinical: dict | None = None,
    page_size: int = PAGE_SIZE,
) -> dict:
    """Everything the page's script reads (embedded as JSON)."""
    cases = build_cases(runs, entries=entries, image_dir=image_dir)
    page_dir = out.parent.resolve()
    unreadable = []
    for case in cases:
        for image in case["images"]:
            try:
                image["src"] = image_source(image.pop("path"), page_dir, thumbnail_px)
            except UnreadableImage as e:
                image["src"], image["unreadable"] = None, True
                unreadable.append(str(e))
    if unreadable:
        print(
            f"warning: {len(unreadable)} image(s) unreadable, shown as a placeholder (first: {unreadable[0]})"
        )
    names = [run.name for run in runs]
    observations = check_clinical(clinical, [c["id"] for c in cases], names) if clinical else []
    return {
        "runs": names,
        "uncertain_as": uncertain_policy(runs),
        "metrics": list(STUDY_METRICS),
        "controls": [run.control_condition for run in runs],
        "observations": observations,
        "clinical": clinical or None,
        "page_size": page_size,
        "cases": cases,
    }


def uncertain_policy(runs: list[Run]) -> str:
    """How clinical F1 counted an uncertain label: the first run's card's clinical.uncertain, else the
    scorer's default ("positive"). The page colours agreement as F1 scores it (rrg.score.clinical.f1.binarize:
    positive, and uncertain when it counts as positive, against the rest)."""
    recorded = ((runs[0].card or {}).get("clinical") or {}).get("uncertain") if runs else None
    return recorded if recorded in UNCERTAIN_AS else "positive"


def script_json(data: dict) -> Markup:
    """JSON safe inside a <script> element: '<', '>' and '&' escaped, so no '</script>' can end it."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def render_page(data: dict, runs: list[Run], title: str) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["num"] = format_value
    template = env.get_template("browse.html.j2")
    return template.render(
        title=title,
        runs=[run_summary(run) for run in runs],
        metrics=METRICS,
        sections=SECTIONS,
        study_metrics=STUDY_METRICS,
        data=script_json(data),
        script=Markup((TEMPLATES / "browse.js").read_text(encoding="utf-8")),
        style=Markup((TEMPLATES / "browse.css").read_text(encoding="utf-8")),
        has_clinical=bool(data["observations"]),
        n_studies=len(data["cases"]),
    )


def build_page(
    results: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    names: list[str] | None = None,
    entries: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = DEFAULT_IMAGE_DIR,
    thumbnail_px: int = 0,
    clinical: dict | None = None,
    page_size: int = PAGE_SIZE,
    title: str | None = None,
) -> Path:
    """Read the runs, prepare the data, render and write the page (atomically); returns its path."""
    if names is not None and len(names) != len(results):
        raise InputError(f"--names has {len(names)} names for {len(results)} runs")
    runs = [load_run(path, name) for path, name in zip(results, names or [None] * len(results))]
    taken: dict[str, int] = {}
    for run in runs:  # two folders of the same name (a/eval, b/eval) must not share a column name
        taken[run.name] = taken.get(run.name, 0) + 1
        if taken[run.name] > 1:
            run.name = f"{run.name} ({taken[run.name]})"
    if clinical is None:
        clinical = clinical_labels(runs)
    out = Path(out)
    data = page_data(
        runs,
        out,
        entries=entries,
        image_dir=image_dir,
        thumbnail_px=thumbnail_px,
        clinical=clinical,
        page_size=page_size,
    )
    title = title or "Cases: " + " vs ".join(run.name for run in runs)
    atomic_write_text(out, render_page(data, runs, title))
    return out


@dataclass
class BrowseSettings:
    results: str = flag(help="results folder holding predictions.jsonl (or the file itself)", positional=True)
    compare: list[str] = flag(
        help="other runs on the same studies, shown side by side", default_factory=list, metavar="RESULTS"
    )
    out: str = flag("runs/browse/index.html", "page to write", nonempty=True)
    names: list[str] | None = flag(
        None, "column name of each run, first run then --compare (None: folder names)"
    )
    image_dir: str = flag(DEFAULT_IMAGE_DIR, "folder holding the images", nonempty=True)
    entries: str | None = flag(None, "the split file the run was made from, for indications and view names")
    thumbnails: int = flag(
        0,
        "embed JPEG thumbnails of at most PX pixels instead of linking the images (0: link)",
        ge=0,
        metavar="PX",
    )
    title: str | None = flag(None, "page title (None: 'Cases: ' and the run names)")
    screenshot: str | None = flag(
        None, "also save a screenshot of the page from headless Chromium", metavar="PNG"
    )


def parse_args(argv: list[str] | None = None) -> BrowseSettings:
    return parse_flags(BrowseSettings, argv, description=__doc__)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = build_page(
        [args.results, *args.compare],
        args.out,
        names=args.names,
        entries=args.entries,
        image_dir=args.image_dir,
        thumbnail_px=args.thumbnails,
        title=args.title,
    )
    print(f"page: {out}")
    if args.screenshot:
        from rrg.report.browser import screenshot

        print(f"screenshot: {screenshot(out, args.screenshot)}")
