"""Builders of small image and dataset fixtures in the real layouts (DICOM through pydicom, PNGs, JPGs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    transfer_syntax: str | None = None,
) -> Path:
    """A DICOM Part 10 file holding `pixels`; window=(center, width), rescale=(slope, intercept)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "CR"
    bits = bits_stored or pixels.dtype.itemsize * 8
    ds.set_pixel_data(pixels, photometric, bits)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def gradient(height: int = 32, width: int = 48, high: int = 4095, dtype=np.uint16) -> np.ndarray:
    """A left-to-right ramp 0..high: easy to check orientation, inversion and scaling on."""
    row = np.linspace(0, high, width).round().astype(dtype)
    return np.tile(row, (height, 1))


def save_png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def save_jpg(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)).convert("RGB").save(path)
    return path


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 \n INDICATION:  ___-year-old man with cough.  Evaluate for pneumonia.
 \n TECHNIQUE:  Chest PA and lateral
 \n COMPARISON:  None.
 \n FINDINGS:
 \n The lungs are clear.  No pleural effusion or pneumothorax.
 Heart size is normal.
 \n IMPRESSION:
 \n No acute cardiopulmonary process.
"""
MIMIC_IMPRESSION_ONLY = """                                 FINAL REPORT
 INDICATION:  Fever.
 \n IMPRESSION:  Mild pulmonary edema.
"""


def write_gz_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv
    import gzip

    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_mimic(root: Path, studies: list[dict], reports_zip: bool = False) -> tuple[Path, Path]:
    """A MIMIC-CXR-JPG folder and MIMIC-CXR reports (folder, or mimic-cxr-reports.zip) in PhysioNet's layout.

    Each study: {"subject": "10000032", "study": "50414267", "split": "train", "report": text or None,
    "images": [(dicom_id, ViewPosition), ...], "absent": [dicom_ids without a JPG file]}.
    Returns (data_dir, reports path).
    """
    import zipfile

    data = root / "mimic-cxr-jpg"
    reports = root / "mimic-cxr-reports"
    split_rows, meta_rows, label_rows, texts = [], [], [], {}
    for s in studies:
        subject, study = s["subject"], s["study"]
        folder = data / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        for dicom_id, view in s["images"]:
            split_rows.append([dicom_id, study, subject, s["split"]])
            meta_rows.append([dicom_id, subject, study, "CHEST (PA AND LAT)", view, "3056", "2544"])
            if dicom_id not in s.get("absent", []):
                save_jpg(folder / f"{dicom_id}.jpg", seed=len(meta_rows))
        label_rows.append([subject, study] + ["1.0"] + [""] * 13)
        if s.get("report") is not None:
            texts[f"files/p{subject[:2]}/p{subject}/s{study}.txt"] = s["report"]
    write_gz_csv(data / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    write_gz_csv(
        data / "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns"],
        meta_rows,
    )
    labels = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity", "Edema",
              "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
              "Fracture", "Support Devices"]
    write_gz_csv(data / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *labels], label_rows)
    if reports_zip:
        reports = root / "mimic-cxr-reports.zip"
        with zipfile.ZipFile(reports, "w") as z:
            for name, text in texts.items():
                z.writestr(name, text)
    else:
        for name, text in texts.items():
            (reports / name).parent.mkdir(parents=True, exist_ok=True)
            (reports / name).write_text(text)
    return data, reports


def mimic_studies() -> list[dict]:
    """Five studies of four subjects covering what the builder decides: both views, AP only, no frontal, no
    findings, no report."""
    return [
        {"subject": "10000032", "study": "50414267", "split": "train", "report": MIMIC_REPORT,
         "images": [("d-lat", "LATERAL"), ("d-ap", "AP"), ("d-pa", "PA")]},
        {"subject": "10000032", "study": "53189527", "split": "train", "report": MIMIC_IMPRESSION_ONLY,
         "images": [("d2-ap", "AP")]},
        {"subject": "10000764", "study": "57375967", "split": "validate", "report": MIMIC_REPORT,
         "images": [("d3-ll", "LL"), ("d3-ap", "AP")]},
        {"subject": "10000898", "study": "50771383", "split": "test", "report": MIMIC_REPORT,
         "images": [("d4-lat", "LATERAL"), ("d4-x", "")]},
        {"subject": "10000935", "study": "51178377", "split": "test", "report": None,
         "images": [("d5-pa", "PA")]},
    ]
