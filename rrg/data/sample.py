"""A small IU-X-Ray-shaped dataset for the CPU smoke run: Kaggle's two CSVs plus synthetic PNGs.

With the real Kaggle CSVs at hand, the first studies that have findings and impression are taken
from them (real report text, synthetic images); without them, reports are generated from a few
phrases. Either way the folder has the Kaggle layout that data/download.py --from-dir accepts.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

FINDINGS = [
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "Heart size is mildly enlarged. There is no pleural effusion or pneumothorax.",
    "Lungs are hyperexpanded. No focal consolidation. Degenerative changes of the spine.",
    "There is a small left pleural effusion. Cardiac silhouette is within normal limits.",
]
IMPRESSIONS = ["No acute cardiopulmonary abnormality.", "Mild cardiomegaly.", "Small left pleural effusion."]


def sample_from_kaggle(
    reports_csv: Path, projections_csv: Path, n_studies: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    reports = pd.read_csv(reports_csv)
    projections = pd.read_csv(projections_csv)
    usable = reports.dropna(subset=["findings", "impression"])
    usable = usable[usable["uid"].isin(projections["uid"])].head(n_studies)
    return usable, projections[projections["uid"].isin(usable["uid"])]


def synthetic_tables(n_studies: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = random.Random(seed)
    reports, projections = [], []
    for uid in range(1, n_studies + 1):
        reports.append(
            {
                "uid": uid,
                "MeSH": "normal",
                "Problems": "normal",
                "image": "Xray Chest PA and Lateral",
                "indication": rng.choice(["Chest pain", "Cough", None]),
                "comparison": "None.",
                "findings": rng.choice(FINDINGS),
                "impression": rng.choice(IMPRESSIONS),
            }
        )
        for k, view in enumerate(("Frontal", "Lateral"), start=1):
            projections.append(
                {"uid": uid, "filename": f"{uid}_IM-{uid:04d}-{k}001.dcm.png", "projection": view}
            )
    return pd.DataFrame(reports), pd.DataFrame(projections)


def write_sample_dataset(
    out: str | os.PathLike,
    n_studies: int = 40,
    kaggle_dir: str | os.PathLike | None = None,
    seed: int = 0,
    image_size: int = 64,
) -> Path:
    """Write <out>/indiana_reports.csv, indiana_projections.csv and images/images_normalized/*.png."""
    out = Path(out)
    csvs = (
        [Path(kaggle_dir) / name for name in ("indiana_reports.csv", "indiana_projections.csv")]
        if kaggle_dir
        else []
    )
    if csvs and all(p.exists() for p in csvs):
        reports, projections = sample_from_kaggle(*csvs, n_studies)
    else:
        reports, projections = synthetic_tables(n_studies, seed)
    image_dir = out / "images" / "images_normalized"
    image_dir.mkdir(parents=True, exist_ok=True)
    reports.to_csv(out / "indiana_reports.csv", index=False)
    projections.to_csv(out / "indiana_projections.csv", index=False)
    rng = np.random.default_rng(seed)
    for name in projections["filename"]:
        pixels = rng.integers(0, 256, (image_size, image_size), dtype=np.uint8)
        Image.fromarray(pixels).convert("RGB").save(image_dir / name)
    return out
