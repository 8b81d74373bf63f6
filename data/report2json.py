"""Build the IU X-Ray split files from the Kaggle data (see rrg/data.py for the protocols).

    python data/report2json.py --protocol clean --data_dir data/iu_xray --out data/
    python data/report2json.py --protocol reference --data_dir data/iu_xray --out data/reference/
    python data/report2json.py --protocol r2gen --r2gen-annotation annotation.json --out data/r2gen/

Writes train_report.json, val_report.json (not for reference), test_report.json, reports.csv and
leak_audit.json into --out, and prints the audit.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys
from dataclasses import dataclass

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data import (
    PROTOCOLS,
    SplitConfig,
    build_reports_table,
    build_split,
    format_audit,
    leak_audit,
    read_reference_table,
    write_splits,
)
from rrg.io import InputError


@dataclass
class Report2JsonConfig:
    protocol: str = flag("clean", "Split protocol: reference | r2gen | clean.", choices=PROTOCOLS)
    data_dir: str = flag("data/iu_xray", "The folder data/download.py laid out.", nonempty=True)
    out: str = flag("data", "Where the split files go.", nonempty=True)
    reference_csv: str | None = flag(None, "The reference's report.csv instead of the Kaggle CSVs (exact copy).")
    r2gen_annotation: str | None = flag(None, "R2Gen's annotation.json (r2gen).")
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
    xxxx: str | None = flag(None, "Replace the anonymisation token XXXX with this.")
    skip_missing: bool = flag(False, "Skip (and count) missing images / studies without images.")
    images_from_csv: bool = flag(
        False,
        "List each study's image files from indiana_projections.csv, not the images folder (no images "
        "needed: for text-only work such as eval/baselines.py).",
    )


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_flags(Report2JsonConfig, argv, description=__doc__)
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
        print(f"notes: {config.notes if args.protocol != 'r2gen' else _short_notes(config.notes)}")
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


if __name__ == "__main__":
    sys.exit(main())
