"""Build the IU X-Ray split files from the Kaggle data (see rrg/data/iu_xray.py for the protocols).

    python data/report2json.py --protocol clean --data_dir data/iu_xray --out data/
    python data/report2json.py --protocol reference --data_dir data/iu_xray --out data/reference/
    python data/report2json.py --protocol r2gen --r2gen-annotation annotation.json --out data/r2gen/
    python data/report2json.py --protocol rexrank --rexrank_dir rexrank/ --r2gen_annotation annotation.json \
        --board findings --out data/rexrank/

Writes train_report.json, val_report.json (not for reference), test_report.json, reports.csv and
leak_audit.json into --out, and prints the audit.

Other datasets (rrg/data/dataset_splits.py; docs/datasets.md), writing {split}_report.json and dataset_audit.json:

    python data/report2json.py --dataset mimic-cxr --data_dir MIMIC-CXR-JPG --reports mimic-cxr-reports.zip
    python data/report2json.py --dataset chexpert-plus --data_dir CheXpert-Plus
    python data/report2json.py --dataset mimic-cxr --test_set rexrank --rexrank_json ReXRank_MIMICCXR_test.json --text_only
    python data/report2json.py --dataset images --data_dir my_images/ --out data/mine/
"""

from __future__ import annotations

from dataclasses import dataclass

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.dataset_splits import DATASETS, TEST_SETS, write_dataset
from rrg.data.iu_xray import build_reports_table, read_reference_table
from rrg.data.leak_audit import format_audit, leak_audit
from rrg.data.mimic_cxr import TARGETS
from rrg.data.protocols import PROTOCOLS, SplitConfig, build_split, write_splits
from rrg.io import InputError


@dataclass
class Report2JsonConfig:
    protocol: str = flag("clean", "Split protocol: reference | r2gen | clean | rexrank.", choices=PROTOCOLS)
    data_dir: str = flag("data/iu_xray", "The folder data/download.py laid out.", nonempty=True)
    out: str = flag("data", "Where the split files go.", nonempty=True)
    reference_csv: str | None = flag(None, "The reference's report.csv instead of the Kaggle CSVs (exact copy).")
    r2gen_annotation: str | None = flag(None, "R2Gen's annotation.json (r2gen; rexrank: its train split).")
    rexrank_dir: str | None = flag(
        None, "rexrank: the folder of ReXRank_IUXray_test.json and ReXRank_IUXray_valid.json."
    )
    board: str = flag(
        "findings",
        "rexrank: which ReXrank board the references are for: findings (findings only) or "
        "findings_impression ('Findings: ... Impression: ...').",
        choices=["findings", "findings_impression"],
    )
    context: bool = flag(False, "rexrank: ReXrank's context (indication and comparison) appended to the question.")
    seed: int = flag(42, "Clean protocol: split seed.", ge=0)
    fractions: list[float] = flag(
        help="Clean protocol: train val test fractions.", default_factory=lambda: [0.7, 0.1, 0.2], ge=0, le=1
    )
    views: str = flag(
        "frontal",
        "frontal (one image; a study without one uses its first image, counted and printed) or both "
        "(frontal + lateral).",
        choices=["frontal", "both"],
    )
    indication: bool = flag(False, "Append the clinical indication to the question.")
    comparison: bool = flag(
        False,
        "Append the comparison line to the question ('Indication: ... Comparison: ...'); a line holding a "
        "sentence of the study's own report is dropped and counted.",
    )
    regions: str | None = flag(
        None,
        "Region-structured targets (Lung:/Heart:/Mediastinal:/Bone:/Others: lines, then Impression:): "
        "'classifier' (rrg.data.regions) or a region file in WangLab's format (its missing studies classified).",
    )
    xxxx: str | None = flag(None, "Replace the anonymisation token XXXX with this.")
    skip_missing: bool = flag(False, "Skip (and count) missing images / studies without images.")
    images_from_csv: bool = flag(
        False,
        "List each study's image files from indiana_projections.csv, not the images folder (no images "
        "needed: for text-only work such as eval/baselines.py).",
    )
    dataset: str = flag("iu-xray", "which dataset --data_dir holds (docs/datasets.md)", choices=list(DATASETS))
    reports: str | None = flag(None, "mimic-cxr: MIMIC-CXR's reports, folder or mimic-cxr-reports.zip (default: --data_dir)")
    chexpert_csv: str | None = flag(None, "chexpert-plus: the report table (default: DATA_DIR/df_chexpert_plus_240401.csv)")
    images_csv: str | None = flag(None, "images: a CSV of image paths (column image; optional report, indication, id)")
    image_dir: str | None = flag(None, "images --images_csv: the folder its paths are relative to (default: the CSV's)")
    target: str = flag(
        "findings_impression", "mimic-cxr, chexpert-plus: the sections a study must have", choices=list(TARGETS)
    )
    test_set: str = flag("official", "mimic-cxr, chexpert-plus: the dataset's test split or ReXrank's", choices=list(TEST_SETS))
    rexrank_json: str | None = flag(None, "--test_set rexrank: ReXRank_MIMICCXR_test.json or ReXRank_CheXpertPlus.json")
    text_only: bool = flag(False, "--test_set rexrank: the test split from the JSON alone (no dataset on disk)")


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_flags(Report2JsonConfig, argv, description=__doc__)
    if args.dataset != "iu-xray":
        return write_dataset(args)
    if args.comparison and args.protocol == "reference":
        raise InputError("--comparison changes the prompt; the reference protocol reproduces the paper's")
    if args.regions and args.protocol == "reference":
        raise InputError(
            "--regions rewrites the targets; the reference protocol reproduces the paper's as they are"
        )
    if args.reference_csv and args.protocol != "reference":
        raise InputError(
            "--reference_csv reproduces the reference protocol; use it with --protocol reference"
        )
    config = SplitConfig(
        seed=args.seed,
        fractions=tuple(args.fractions),
        views=args.views,
        indication=args.indication,
        xxxx=args.xxxx,
        r2gen_annotation=args.r2gen_annotation,
        rexrank_dir=args.rexrank_dir,
        board=args.board,
        context=args.context,
        regions=args.regions,
        comparison=args.comparison,
    )
    if args.reference_csv:
        table = read_reference_table(args.reference_csv, args.data_dir)
    else:
        table = build_reports_table(
            args.data_dir,
            skip_missing=args.skip_missing,
            images_from_csv=args.images_from_csv,
            notes=config.notes,
        )
    splits = build_split(args.protocol, table, config)
    audit = leak_audit(splits, table)
    audit["protocol"] = args.protocol
    audit["config"] = {k: v for k, v in vars(args).items()}
    audit["notes"] = config.notes
    written = write_splits(splits, table, audit, args.out)
    print(format_audit(audit))
    if config.notes:
        print(f"notes: {config.notes if args.protocol not in ('r2gen', 'rexrank') else _short_notes(config.notes)}")
    print("wrote " + ", ".join(str(p) for p in written))
    if args.views == "frontal" and (used := config.notes.get("no_frontal_used_first_image")):
        per_split = ", ".join(
            f"{name} {c['studies_without_frontal']}" for name, c in audit["splits"].items()
        )
        print(
            f"note: --views frontal: {used} studies of the table have no frontal image and use their first "
            f"image (a lateral) instead; in the splits: {per_split} (leak_audit.json, studies_without_frontal)"
        )
    return 0


def _short_notes(notes: dict) -> dict:
    """r2gen notes without the (possibly long) lists of unmapped ids."""
    mapping = {
        name: f"{c['mapped']}/{c['annotated']} mapped" for name, c in notes.get("r2gen_mapping", {}).items()
    }
    return {**notes, "r2gen_mapping": mapping}
