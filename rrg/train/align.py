"""The projector's alignment stage (LLaVA-Rad's stage 1): the vision-to-text projector alone is trained,
the language model and the vision tower frozen, no LoRA. A LoRA run then starts from its projector.

    python train_lora.py --stage align --json_file ... --output_dir runs/align
    python train_lora.py --projector_from runs/align/final --json_file ... --output_dir runs/lora

What differs from LoRA training is here: which parameters train (`ProjectorStage`), the stage's defaults
(`stage_defaults`), and the projector file. A projector folder holds

    projector.safetensors   the projector's tensors, named as in the Llava model
                            (model.multi_modal_projector.linear_1.weight, ...)
    projector.json          {"format", "base_model", "base_config_sha256", "projector_sha256", "keys",
                            "run_fingerprint"}: where it comes from

`load_projector` puts one into a Llava model (before LoRA is attached), after checking the file's
sha256, that it was trained on a model of the same config, and that its tensors are exactly the model's
projector (no key missing or left over, same shapes). rrg.model.load.load_model loads a projector folder given
as lora_path, so eval, the API and the merge take an align run's final/ or best/ as they take an adapter.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import torch

from rrg.io import InputError, atomic_write_json, read_json_object

PROJECTOR_MODULE = "multi_modal_projector"
WEIGHTS_FILE = "projector.safetensors"
INFO_FILE = "projector.json"
FORMAT = "rrg-projector-1"
# LLaVA-Rad's stage-1 recipe (scripts/pretrain.sh): lr 1e-3, cosine, warm-up 0.03, no weight decay, one
# epoch, a global batch of 256. Applied to the flags a user did not pass.
DEFAULTS = {"lr": 1e-3, "lr_scheduler": "cosine", "warmup_ratio": 0.03, "weight_decay": 0.0, "epochs": 1}
GLOBAL_BATCH = 256
# LoRA's settings, meaningless without LoRA: left out of an align run's fingerprint.
LORA_ONLY = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "train_projector")


def given_flags(argv: list[str]) -> set[str]:
    """The field names a command line sets (`--lr 1e-3`, `--lr=1e-3`, `--no_compile` -> compile)."""
    names = {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}
    return names | {name[3:] for name in names if name.startswith("no_")}


def stage_defaults(cfg, given: set[str], world_size: int):
    """cfg with LLaVA-Rad's stage-1 settings where the command line did not set them; the accumulation
    makes micro-batch x accumulation x processes reach GLOBAL_BATCH (8 x 32 on one GPU)."""
    changes = {name: value for name, value in DEFAULTS.items() if name not in given}
    if "gradient_accumulation_steps" not in given:
        changes["gradient_accumulation_steps"] = max(
            1, math.ceil(GLOBAL_BATCH / (cfg.batch_size * world_size))
        )
    return replace(cfg, **changes)


def check_settings(cfg) -> None:
    """The flags an align run refuses, one line each."""
    if cfg.stage != "align":
        return
    for name, why in (
        ("projector_lr", "the projector is all that trains: its rate is --lr"),
        ("projector_from", "the stage trains the base model's projector; start a LoRA run from its output"),
        ("fp8", "FP8 replaces LoRA's frozen base linears, and the stage has no LoRA"),
    ):
        if getattr(cfg, name):
            raise InputError(f"--stage align refuses --{name}: {why}")


def sha256(path: str | os.PathLike) -> str:
    from rrg.train.checkpoints import file_sha256

    return file_sha256(path)


# Config entries that say how a model is run, not what it is (training sets use_cache False).
RUNTIME_CONFIG_KEYS = ("_name_or_path", "torch_dtype", "dtype", "transformers_version", "use_cache")


def config_sha256(model_config) -> str:
    """The base model's architecture, as a digest (its name and dtype left out: a copy is the same model)."""
    from rrg.train.checkpoints import json_sha256

    config = model_config.to_dict()
    for part in (config, config.get("text_config") or {}, config.get("vision_config") or {}):
        for key in RUNTIME_CONFIG_KEYS:
            part.pop(key, None)
    return json_sha256(config)


def llava(model):
    """The Llava model inside a peft or ProjectorStage wrapper."""
    while hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def projector_state(model) -> dict[str, torch.Tensor]:
    """The projector's tensors of a Llava model, named as in it."""
    prefix = f"model.{PROJECTOR_MODULE}."
    return {prefix + name: p for name, p in llava(model).model.multi_modal_projector.state_dict().items()}


def save_projector(state: dict[str, torch.Tensor], out_dir: str | os.PathLike, provenance: dict) -> None:
    """projector.safetensors, then projector.json with its sha256 (the folder is made atomic by the caller)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(weights))
    info = {"format": FORMAT, **provenance, "projector_sha256": sha256(weights), "keys": sorted(state)}
    atomic_write_json(out_dir / INFO_FILE, info)


def is_projector_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / INFO_FILE).is_file() and not (Path(path) / "adapter_config.json").exists()


def read_projector(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, projector.json) of a projector folder, its sha256 checked."""
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{path}: projector folder not found")
    info = read_json_object(folder / INFO_FILE)
    if info.get("format") != FORMAT:
        raise InputError(f"{folder / INFO_FILE}: format {info.get('format')!r}, expected {FORMAT!r}")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(f"{weights}: file not found")
    if sha256(weights) != info.get("projector_sha256"):
        raise InputError(
            f"{weights}: sha256 differs from projector_sha256 in {INFO_FILE} (damaged or replaced)"
        )
    try:
        return load_file(str(weights)), info
    except Exception as e:  # noqa: BLE001 - any unreadable safetensors file means the same thing
        raise InputError(f"{weights}: cannot read ({type(e).__name__}: {e})") from None


def load_projector(model, path: str | os.PathLike) -> dict:
    """Copy a projector folder's tensors into a Llava model's projector (all of them, or an InputError);
    returns its projector.json."""
    state, info = read_projector(path)
    base = llava(model)
    if info.get("base_config_sha256") != config_sha256(base.config):
        raise InputError(
            f"{Path(path) / INFO_FILE}: trained on another base model ({info.get('base_model')}); "
            "its config differs from this model's"
        )
    target = projector_state(base)
    missing, unused = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    shapes = [k for k in set(target) & set(state) if target[k].shape != state[k].shape]
    if missing or unused or shapes:
        raise InputError(
            f"{Path(path) / WEIGHTS_FILE}: does not fit this model's projector: missing {missing[:3]}, "
            f"unused {unused[:3]}, other shapes {sorted(shapes)[:3]}"
        )
    with torch.no_grad():
        for key, tensor in state.items():
            target[key].copy_(tensor.to(target[key].dtype))
    return info


class ProjectorStage(torch.nn.Module):
    """A Llava model with only its projector trainable, saved (`save_pretrained`, as the checkpoint code
    calls it) and restored (`load_weights`) as a projector folder."""

    weights_file = WEIGHTS_FILE

    def __init__(self, model, provenance: dict):
        super().__init__()
        model.requires_grad_(False)
        getattr(model.model, PROJECTOR_MODULE).requires_grad_(True)
        self.base = model
        self.provenance = provenance

    def get_base_model(self):
        return self.base

    def forward(self, *args, **kwargs):
        return self.base(*args, **kwargs)

    def save_pretrained(self, out_dir: str, state_dict: dict | None = None) -> None:
        prefix = "base."  # state_dict is this wrapper's (accelerate's get_state_dict)
        if state_dict is None:
            state = projector_state(self.base)
        else:
            wanted = set(projector_state(self.base))
            state = {
                k.removeprefix(prefix): v for k, v in state_dict.items() if k.removeprefix(prefix) in wanted
            }
        save_projector(state, out_dir, self.provenance)

    def load_weights(self, weights: dict[str, torch.Tensor], where: str | os.PathLike) -> None:
        target = projector_state(self.base)
        if set(weights) != set(target):
            raise InputError(
                f"{where}: projector weights do not fit this model ({sorted(set(weights) ^ set(target))[:3]})"
            )
        with torch.no_grad():
            for key, tensor in weights.items():
                target[key].copy_(tensor.to(target[key].dtype))

    def print_trainable_parameters(self) -> None:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        print(
            f"trainable params: {trainable:,} || all params: {total:,} || the projector alone (--stage align)"
        )


def provenance(cfg, model, run_fingerprint: dict | None = None) -> dict:
    """projector.json's record of where a projector comes from."""
    record = {"base_model": cfg.model_path, "base_config_sha256": config_sha256(llava(model).config)}
    if run_fingerprint is not None:
        record["run_fingerprint"] = run_fingerprint.get("digest")
    return record
