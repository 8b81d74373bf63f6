"""What several test files share: paths of the shared data, tiny training runs, case-browser runs,
and `python tests/helpers.py SCRIPT...` (test_cli_help's driver: each script's --help in a child
forked from one process that imported the heavy libraries once).

`train_lora` is train_lora.py loaded by its path, the one script a test runs in-process: its main() and
loop stay in the script so the recipe reads top to bottom, and a subprocess per tiny run (about 40 of them)
would add ~11 s of imports each and lose the monkeypatched faults the tests inject."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import runpy
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import rrg.train.settings
import rrg.train.setup
from rrg.cli import shared_data_dir
from rrg.data.protocols import ReferenceEntry
from rrg.report.results import STANDARD_METRICS

REPO = Path(__file__).resolve().parents[1]


def _load_train_lora():
    spec = importlib.util.spec_from_file_location("train_lora", REPO / "train_lora.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: pickles and dataclasses look it up there
    spec.loader.exec_module(module)
    return module


train_lora = _load_train_lora()

SHARED_DATA = shared_data_dir()


# Files of the Kaggle folder that indiana_projections.csv does not list (the reference's report.csv has them).
EXTRA_IMAGES = (
    "2084_IM-0715-1001-0002.dcm.png",
    "2084_IM-0715-2001-0001.dcm.png",
    "2560_IM-1064-4001.dcm.png",
    "3809_IM-1919-1003002.dcm.png",
)
REFERENCE_PROMPT = "You are a radiologist. Analyze ... Chief Complaint: normalChest pain."

def shared_path(*parts: str) -> Path:
    """Path of a file under shared data, or skip the calling test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data file {path} is absent (set RRG_SHARED_DATA to the shared/data folder)")
    return path


def free_port() -> int:
    """A free TCP port on the loopback interface (for a gloo process group's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_process_group(rank: int, world: int, port: int) -> None:
    """In a spawned test process: the environment `accelerate launch` would give rank `rank` of `world`
    (gloo on the loopback), one CPU thread each so two processes share the box's cores."""
    import torch

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",  # else accelerate picks a thread count per process
    )
    torch.set_num_threads(1)


PER_IMAGE = 16
REPORTS = [
    "Findings: The heart is normal in size. Impression: No acute disease.",
    "Findings: Mild cardiomegaly; small left pleural effusion. Impression: Cardiomegaly with effusion.",
    "Findings: Clear lungs. Impression: Normal chest.",
    "Findings: Right lower lobe opacity. Impression: Pneumonia.",
    "Findings: Hyperinflated lungs. Impression: COPD.",
]


def write_split(
    folder: Path, reports: list[str], name: str = "split.jsonl", missing: int | None = None
) -> Path:
    """A JSONL split (line i+1 = entry i) with one small PNG per entry; entry `missing` has no image file."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(reports))
    lines = []
    for i, report in enumerate(reports):
        image = f"{i}_IM-0001.png"
        if i != missing:
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / "images" / image)
        # The reference paper's entry format.
        lines.append(json.dumps({"prompt": "Write the report.", "input_image": image, "response": report}))
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def run_training(model_dir: Path, folder: Path, *extra: str) -> Path:
    out = folder / "out"
    args = [
        "--model_path", str(model_dir),
        "--json_file", str(folder / "split.jsonl"),
        "--image_dir", str(folder / "images"),
        "--output_dir", str(out),
        "--lora_r", "8", "--lora_alpha", "16",
        "--num_workers", "0", "--seed", "3",
        "--batch_size", "1",  # the tests count steps in single samples; --batch_size below overrides it
        *extra,
    ]  # fmt: skip
    train_lora.main(args)
    return out


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def lora_model(tiny_model_dir, **overrides):
    from accelerate import Accelerator

    config = rrg.train.settings.TrainConfig(model_path=str(tiny_model_dir), lora_r=8, lora_alpha=16, **overrides)
    torch.manual_seed(0)
    model = rrg.train.setup.build_model(config, Accelerator(cpu=True))
    # Non-zero B matrices, so LoRA A also gets gradients (B starts at zero).
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, "PNG")
    return buffer.getvalue()


def make_kaggle_dir(root, iu_xray_dir, drop: set[str] = frozenset()):
    """A Kaggle-shaped folder: the real CSVs (linked) and an 8x8 PNG per image file."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("indiana_reports.csv", "indiana_projections.csv"):
        (root / name).symlink_to(iu_xray_dir / name)
    images = root / "images" / "images_normalized"
    images.mkdir(parents=True)
    data = tiny_png()
    names = [*pd.read_csv(iu_xray_dir / "indiana_projections.csv")["filename"], *EXTRA_IMAGES]
    for name in names:
        if name not in drop:
            (images / name).write_bytes(data)
    return root


def _split(tmp_path: Path, shape: str) -> tuple[Path, Path]:
    """Two single-image entries: our reference protocol's shape, the paper's own, or the clean one."""
    images = tmp_path / "images"
    images.mkdir()
    records = []
    for study in ("10", "11"):
        name = f"{study}_IM-0001-1001.dcm.png"
        Image.new("RGB", (8, 8)).save(images / name)
        common = {"prompt": REFERENCE_PROMPT, "response": "Findings: lungs clear. Impression: normal."}
        if shape == "reference":  # what data/report2json.py --protocol reference writes
            entry = ReferenceEntry(id=f"{study}_0", study_id=study, images=[name], **common)
            records.append({**entry.to_json(), "input_image": f"./images/images_normalized/{name}"})
        elif shape == "paper":  # the reference repository's own files
            records.append({**common, "input_image": f"./images/images_normalized/{name}"})
        else:
            records.append({"id": study, "images": [name], **common})
    json_file = tmp_path / "test_report.json"
    json_file.write_text(json.dumps(records))
    return json_file, images


def _args(json_file: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--json_file",
        str(json_file),
        "--image_dir",
        str(images),
        "--out",
        str(out),
        "--num_workers",
        "0",
        *extra,
    ]


SHORT = ("--epochs", "1", "--gradient_accumulation_steps", "1")  # 5 steps of one sample


def error_line(capsys) -> str:
    """The one line a refused run prints on stderr (its `error: ...` line)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def refused(model_dir: Path, folder: Path, *args: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_training(model_dir, folder, *args)
    assert stopped.value.code == 1


def train_steps(out: Path) -> list[int]:
    return [r["step"] for r in read_log(out) if r["type"] == "train"]


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


def _section(scale: float) -> dict:
    return {m: round(scale * (0.5 - 0.05 * i), 6) for i, m in enumerate(STANDARD_METRICS)}


def write_card(
    path: Path,
    scale: float = 1.0,
    *,
    legacy: bool = False,
    control: bool = False,
    ci: bool = True,
    **settings,
) -> Path:
    metrics = {
        "report": _section(scale),
        "findings": _section(scale * 0.9),
        "impression": _section(scale * 0.7),
    }
    card = {
        "metrics": metrics,
        "counts": {"lines": 10, "studies": 10, "scored": 10},
        "settings": {"normalize": True, "per_image": False, **settings},
        "versions": {"pycocoevalcap": "1.2"},
    }
    if ci:
        card["ci95"] = {s: {m: [v - 0.02, v + 0.02] for m, v in ms.items()} for s, ms in metrics.items()}
    if legacy:
        legacy_findings = {
            "B-1": 0.61,
            "B-2": 0.42,
            "B-3": 0.33,
            "B-4": 0.2468,
            "METEOR": 0.3579,
            "ROUGE-1": 0.5,
        }
        legacy_findings |= {"ROUGE-2": 0.3, "ROUGE-L": 0.4812, "Precision": 0.5, "Recall": 0.5, "F1": 0.5}
        card["legacy"] = {
            "findings": legacy_findings,
            "impression": dict(legacy_findings),
            "unparsed_predictions": 2,
        }
    if control:
        card["image_control"] = {
            "condition": "blank",
            "metrics": {s: {m: v / 2 for m, v in ms.items()} for s, ms in metrics.items()},
            "delta": {s: {m: v / 2 for m, v in ms.items()} for s, ms in metrics.items()},
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card))
    return path


def assert_png(path: Path) -> Image.Image:
    assert path.exists() and path.stat().st_size > 10_000, f"{path} missing or nearly empty"
    image = Image.open(path)
    assert image.format == "PNG"
    return image


PRELOAD = ("numpy", "pandas", "torch", "transformers", "peft", "accelerate", "matplotlib.pyplot", "PIL.Image")
TIMEOUT_S = 120


def run_help(script: str, workdir: str) -> dict:
    out_path, err_path = os.path.join(workdir, "out"), os.path.join(workdir, "err")
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: a script run as `python SCRIPT --help`
        code = 1
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
            sys.argv = [script, "--help"]
            try:
                runpy.run_path(script, run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + TIMEOUT_S
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            done = os.waitpid(pid, 0)
            break
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(done[1])
    with open(out_path) as out, open(err_path) as err:
        return {"code": code, "stdout": out.read(), "stderr": err.read()}


def main(scripts: list[str]) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # as on a machine without a GPU
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    results = {}
    for script in scripts:
        with tempfile.TemporaryDirectory() as workdir:
            results[script] = run_help(script, workdir)
    print(json.dumps(results))

if __name__ == "__main__":
    main(sys.argv[1:])

