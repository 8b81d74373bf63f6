"""A training run's fingerprint: what a resume must match."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from accelerate import Accelerator

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.io import InputError
from rrg.train import align
from rrg.train import checkpoints as C
from rrg.train.inputs import split_images_sha256
from rrg.train.settings import TrainConfig
from rrg.train.setup import model_dtype

# Settings that do not change what is trained (where, how fast, how often it is written or logged), left
# out of the run's fingerprint: a run may be resumed with other values of these. compile, attention and
# checkpointing change only the arithmetic's order. json_file/val_json enter by their content's sha256
# (a moved copy is the same data; a re-generated split is not); image_dir enters as what the entries'
# images resolve to in it (images_sha256: each file's place, size and mtime; see rrg.train.inputs).
NOT_FINGERPRINTED = (
    "output_dir",
    "projector_from",  # enters by its projector's sha256
    "json_file",
    "val_json",
    "image_dir",
    "attn_implementation",
    "gradient_checkpointing",
    "compile",
    "activation_memory_budget",
    "num_workers",
    "save_steps",
    "save_total_limit",
    "eval_batch_size",
    "logging_steps",
    "report_to",
    "resume",
    "overwrite",
    "stop_after_steps",
)


# Settings that change the result but were added after runs had been started: they enter the fingerprint
# only when set away from this default, so a run started before they existed (which ran at the default)
# still resumes, and one started with them set is not resumed without them.
ADDED_LATER = {
    "fp8": False,
    "finding_weight": 1.0,
    "projector_lr": 0.0,
    "stage": "lora",
    "projector_from_sha256": "",
}


def run_fingerprint(cfg: TrainConfig, accelerator: Accelerator) -> dict:
    """The settings that change the result (every TrainConfig field not in NOT_FINGERPRINTED, those of
    ADDED_LATER only when not at their default, the split files' sha256, the resolved dtype, the number and
    kind of processes), and their digest."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    if cfg.projector_from:
        settings["projector_from_sha256"] = align.read_projector(cfg.projector_from)[1]["projector_sha256"]
    if cfg.stage == "align":
        settings = {k: v for k, v in settings.items() if k not in align.LORA_ONLY}
    for name, default in ADDED_LATER.items():
        if settings.get(name, default) == default:
            settings.pop(name, None)
    settings["dtype"] = str(model_dtype(cfg.dtype)).removeprefix("torch.")
    for name in ("json_file", "val_json"):
        path = getattr(cfg, name)
        if path and not Path(path).is_file():
            raise InputError(f"{path}: file not found (--{name})")
        settings[f"{name}_sha256"] = C.file_sha256(path) if path else None
    # Another --image_dir, or a replaced image, is another training set (rrg.train.inputs says what is compared).
    settings["images_sha256"] = split_images_sha256(
        [p for p in (cfg.json_file, cfg.val_json) if p], cfg.image_dir
    )
    settings["world_size"] = accelerator.num_processes
    settings["distributed_type"] = accelerator.distributed_type.name
    return C.fingerprint(settings)
