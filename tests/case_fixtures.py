"""Hand-made results folders for the case-browser and qualitative-figure tests: three real IU X-Ray
studies (their shared-data images, their Kaggle reports), two runs and a blank-image control."""

from __future__ import annotations

import json
from pathlib import Path

IMAGES = {
    "1900": ["CXR1900_IM-0584-1001.png", "CXR1900_IM-0584-2001.png"],
    "7": ["CXR7_IM-2263-1001.png", "CXR7_IM-2263-2001.png"],
    "3": ["CXR3_IM-1384-1001.png"],
}
# The Kaggle reports of these studies (indiana_reports.csv), as report2json writes the reference.
REFERENCES = {
    "1900": "Findings: There are XXXX sternotomy XXXX identified. The heart is within normal limits in size. "
    "The aorta is calcified and tortuous. There are scattered calcified granulomas throughout both lungs. "
    "No focal infiltrate, pleural effusion, or pneumothorax. Mild degenerative changes of the thoracic "
    "spine. Impression: 1. Stable appearance of the chest. No acute process.",
    "7": "Findings: The cardiac contours are normal. XXXX basilar atelectasis. The lungs are clear. Thoracic "
    "spondylosis. Lower cervical XXXX arthritis. Impression: Basilar atelectasis. No confluent lobar "
    "consolidation or pleural effusion.",
    "3": "Impression: No displaced rib fractures, pneumothorax, or pleural effusion identified. Well-expanded "
    "and clear lungs. Mediastinal contour within normal limits. No acute cardiopulmonary abnormality identified.",
}
INDICATIONS = {"1900": "Chest pain", "7": None, "3": "Rib pain after a fall"}
# A good, a middling and a poor prediction, so every sort order differs from file order.
LORA = {
    "1900": "Findings: The heart is within normal limits in size. The aorta is calcified and tortuous. No "
    "focal infiltrate, pleural effusion, or pneumothorax. Impression: No acute process.",
    "7": "Findings: The heart size is normal. The lungs are clear. Impression: No acute cardiopulmonary disease.",
    "3": "Findings: Cardiomegaly with small bilateral pleural effusions. Impression: Congestive heart failure.",
}
TEMPLATE = "Findings: The heart is normal in size. The lungs are clear. Impression: No acute cardiopulmonary abnormality."
# The second run writes one template, and markup once: the page must show it as text.
ZERO_SHOT = {
    "1900": TEMPLATE,
    "7": "Findings: <b>not bold</b> </script><script>window.injected = 1;</script>",
    "3": TEMPLATE,
}
BLANK = {"1900": TEMPLATE, "7": TEMPLATE, "3": "Findings: Lungs are clear. Impression: Normal chest."}


def _card(predictions: Path, scale: float, control: Path | None = None) -> dict:
    metrics = {
        section: {
            m: round(scale * (0.5 - 0.05 * i), 4)
            for i, m in enumerate(("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"))
        }
        for section in ("report", "findings", "impression")
    }
    card = {
        "metrics": metrics,
        "counts": {
            "lines": 3,
            "studies": 3,
            "scored": 3,
            "duplicate_views_dropped": 0,
            "empty_predictions": 0,
        },
        "settings": {"normalize": True, "per_image": False},
        "predictions": str(predictions),
    }
    if control is not None:
        card["image_control"] = {
            "condition": "blank",
            "predictions": str(control),
            "metrics": metrics,
            "delta": {s: {m: 0.01 for m in ms} for s, ms in metrics.items()},
        }
    return card


def _line(study: str, prediction: str, condition: str = "none") -> dict:
    return {
        "id": study,
        "study_id": study,
        "images": IMAGES[study],
        "prompt": "You are a radiologist. Write the report for this chest X-ray: a Findings section, then an "
        "Impression section." + (f" Indication: {INDICATIONS[study]}" if INDICATIONS[study] else ""),
        "prediction": prediction,
        "reference": REFERENCES[study],
        "image_control": condition,
    }


def write_run(
    folder: Path, predictions: dict[str, str], control: dict[str, str] | None = None, scale=1.0
) -> Path:
    """<folder>/predictions.jsonl, scores.json and, with control, predictions.blank.jsonl (eval's layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "predictions.jsonl"
    path.write_text("".join(json.dumps(_line(s, p)) + "\n" for s, p in predictions.items()))
    control_path = None
    if control is not None:
        control_path = folder / "predictions.blank.jsonl"
        control_path.write_text("".join(json.dumps(_line(s, p, "blank")) + "\n" for s, p in control.items()))
    (folder / "scores.json").write_text(json.dumps(_card(path, scale, control_path)))
    return folder


def write_runs(root: Path) -> tuple[Path, Path]:
    """results/lora (with a blank-image control) and results/zero_shot under root."""
    return (
        write_run(root / "results" / "lora", LORA, BLANK, scale=1.0),
        write_run(root / "results" / "zero_shot", ZERO_SHOT, scale=0.6),
    )


# Hand-made CheXpert labels: the page tests control exactly which observations agree.
CLINICAL = {
    "1900": {
        "reference": {
            "Pleural Effusion": "negative",
            "Pneumothorax": "negative",
            "Support Devices": "positive",
        },
        "predictions": {
            "lora": {"Pleural Effusion": "negative", "Pneumothorax": "negative"},
            "zero_shot": {},
        },
    },
    "3": {
        "reference": {"Pleural Effusion": "negative", "Fracture": "negative"},
        "predictions": {
            "lora": {"Pleural Effusion": "positive", "Cardiomegaly": "positive", "Edema": "uncertain"},
            "zero_shot": {"Cardiomegaly": "negative"},
        },
    },
}
