"""data/report2json.py for the datasets beyond IU X-Ray: MIMIC-CXR-JPG, CheXpert Plus, the user's images.

    --dataset mimic-cxr      --data_dir MIMIC-CXR-JPG [--reports folder|mimic-cxr-reports.zip]
    --dataset chexpert-plus  --data_dir CheXpert-Plus [--chexpert_csv df_chexpert_plus_240401.csv]
    --dataset images         --data_dir FOLDER (every image) or --images_csv FILE.csv
    --test_set rexrank --rexrank_json FILE   ReXrank's test set as test_report.json (MIMIC-CXR, CheXpert Plus);
                                             with --text_only, from the JSON alone (no dataset on disk)
"""

from __future__ import annotations

from rrg.data.chexpert_plus import ChexpertPlusConfig, build_chexpert_plus_splits
from rrg.data.dataset_files import Skips, check_subjects, write_split_files
from rrg.data.entries import Entry
from rrg.data.mimic_cxr import MimicConfig, build_mimic_splits
from rrg.data.own_images import csv_entries, folder_entries
from rrg.data.rexrank_sets import rexrank_entries, rexrank_subjects
from rrg.io import InputError

DATASETS = ("iu-xray", "mimic-cxr", "chexpert-plus", "images")
TEST_SETS = ("official", "rexrank")


def with_rexrank_test(
    splits: dict[str, list[Entry]], audit: dict, args, subject_of
) -> tuple[dict[str, list[Entry]], dict]:
    """The official train/val with ReXrank's studies as the test; val studies of ReXrank's patients dropped
    (counted), a ReXrank patient in train an error."""
    test_subjects = rexrank_subjects(args.rexrank_json, args.dataset)
    dropped = Skips()
    kept_val = []
    for entry in splits.get("val", []):
        if subject_of(entry) in test_subjects:
            dropped.add("patient in ReXrank's test set", entry.study_id)
        else:
            kept_val.append(entry)
    owners = {s: {"test"} for s in test_subjects}
    for entry in splits.get("train", []):
        owners.setdefault(subject_of(entry), set()).add("train")
    check_subjects(owners, str(args.rexrank_json))
    test = rexrank_entries(args.rexrank_json, args.dataset, args.views, args.indication)
    audit = {**audit, "test_set": "rexrank", "rexrank_json": str(args.rexrank_json),
             "val_dropped_for_rexrank": dropped.to_json()}
    return {"train": splits.get("train", []), "val": kept_val, "test": test}, audit


def mimic_subject(entry: Entry) -> str:
    return entry.images[0].split("/")[2].removeprefix("p")  # files/pXX/pSUBJECT/sSTUDY/x.jpg


def chexpert_subject(entry: Entry) -> str:
    return next(p for p in entry.images[0].split("/") if p.startswith("patient"))


def build_dataset_splits(args) -> tuple[dict[str, list[Entry]], dict]:
    """Split entries and audit for report2json's --dataset other than iu-xray (see the module docstring)."""
    if args.test_set == "rexrank":
        if args.dataset not in ("mimic-cxr", "chexpert-plus"):
            raise InputError("--test_set rexrank is for --dataset mimic-cxr or chexpert-plus (IU X-Ray: --protocol)")
        if not args.rexrank_json:
            raise InputError("--test_set rexrank needs --rexrank_json (ReXRank_MIMICCXR_test.json / ReXRank_CheXpertPlus.json)")
        if args.text_only:
            test = rexrank_entries(args.rexrank_json, args.dataset, args.views, args.indication)
            return {"test": test}, {"dataset": args.dataset, "test_set": "rexrank", "text_only": True,
                                    "rexrank_json": str(args.rexrank_json)}
    elif args.text_only:
        raise InputError("--text_only builds ReXrank's test set from its JSON: use it with --test_set rexrank")
    if args.dataset == "mimic-cxr":
        config = MimicConfig(views=args.views, target=args.target, indication=args.indication,
                             skip_missing=args.skip_missing)
        splits, audit = build_mimic_splits(args.data_dir, args.reports or args.data_dir, config)
        subject_of = mimic_subject
    elif args.dataset == "chexpert-plus":
        config = ChexpertPlusConfig(views=args.views, target=args.target, indication=args.indication,
                                    skip_missing=args.skip_missing)
        splits, audit = build_chexpert_plus_splits(args.data_dir, args.chexpert_csv, config)
        subject_of = chexpert_subject
    elif args.dataset == "images":
        entries = (csv_entries(args.images_csv, args.image_dir, args.indication)
                   if args.images_csv else folder_entries(args.data_dir))
        with_report = sum(bool(e.response) for e in entries)
        return {"test": entries}, {"dataset": "images", "entries_with_report": with_report,
                                   "entries_without_report": len(entries) - with_report}
    else:
        raise InputError(f"unknown --dataset {args.dataset!r} (choose from {', '.join(DATASETS)})")
    if args.test_set == "rexrank":
        splits, audit = with_rexrank_test(splits, audit, args, subject_of)
    return splits, audit


def write_dataset(args) -> int:
    splits, audit = build_dataset_splits(args)
    audit["config"] = dict(vars(args))
    written = write_split_files(splits, audit, args.out)
    for name, entries in splits.items():
        print(f"{name:>5}: {len(entries)} entries")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
