"""LoRA adapters: this project's PEFT folders, and the reference paper's adapter in the original layout.

The reference adapter (PEFT 0.4, `adapter_model.bin`) was trained on the original LLaVA-Med module
names, and because its target_modules match by suffix (q_proj, k_proj, v_proj, ...) it also holds LoRA
weights for the CLIP tower's q/k/v projections. Its keys are remapped onto the transformers Llava
layout with the checkpoint converter's own key mapping, and injected into exactly those modules.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

from rrg.io import InputError, read_json_object
from rrg.model.convert import map_original_key

PEFT_PREFIX = "base_model.model."
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.(?P<part>lora_[AB])\.weight$")
# Original LLaVA module names that only the reference (original-layout) adapters contain.
REFERENCE_MARKERS = (
    "base_model.model.model.layers.",
    "base_model.model.model.vision_tower.vision_tower.",
    "base_model.model.model.mm_projector.",
    "base_model.model.model.embed_tokens.",
)
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_weights_file(lora_path: Path) -> Path:
    for name in WEIGHT_FILES:
        if (lora_path / name).exists():
            return lora_path / name
    raise InputError(f"{lora_path}: no adapter weights ({' or '.join(WEIGHT_FILES)})")


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one line: its type and the start of its message (torch's are paragraphs whose first
    line says only "Error(s) in loading state_dict": the second names the tensor), whitespace collapsed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:2])
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or (pickle-free) .bin file; every tensor must be finite (a NaN adapter
    generates empty reports, with no error of its own)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, corrupt, or a non-tensor pickle: same message
        raise InputError(f"{path}: cannot read adapter weights ({first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state dict of tensors (a {type(state).__name__})")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise InputError(f"{path}: tensor {key!r} has {bad} non-finite value(s) (NaN or inf)")
    return state


def check_adapter_config(path: Path) -> dict:
    """adapter_config.json: readable JSON, a positive integer r and a finite lora_alpha (peft takes NaN)."""
    config = read_json_object(path)
    r, alpha = config.get("r"), config.get("lora_alpha")
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise InputError(f"{path}: field 'r' must be a positive integer, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
        raise InputError(f"{path}: field 'lora_alpha' must be a finite number, got {alpha!r}")
    return config


def is_reference_format(keys) -> bool:
    return any(key.startswith(REFERENCE_MARKERS) for key in keys)


def hf_module_name(original_module: str) -> str:
    """HF Llava name of an original LLaVA module (the converter's tensor-name mapping, minus `.weight`)."""
    return map_original_key(original_module + ".weight").removesuffix(".weight")


def remap_reference_state_dict(
    state: dict[str, torch.Tensor], where: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reference LoRA keys -> PEFT keys on the HF Llava layout, and new key -> original key (for errors).

    An unknown or unpaired key is an error."""
    remapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        match = LORA_KEY.match(key)
        try:
            module = hf_module_name(match["module"]) if match else None
        except InputError:
            module = None
        if module is None:
            unknown.append(key)
            continue
        new_key = f"{PEFT_PREFIX}{module}.{match['part']}.weight"
        remapped[new_key] = tensor
        origin[new_key] = key
    if unknown:
        raise InputError(f"{where}: {len(unknown)} unknown adapter key(s): {unknown[:5]}")
    modules = lora_modules(remapped)
    unpaired = [
        m
        for m in modules
        if {f"{PEFT_PREFIX}{m}.lora_A.weight", f"{PEFT_PREFIX}{m}.lora_B.weight"} - set(remapped)
    ]
    if unpaired:
        raise InputError(f"{where}: module(s) without both lora_A and lora_B: {unpaired[:5]}")
    return remapped, origin


def lora_modules(peft_state: dict[str, torch.Tensor]) -> list[str]:
    """Module names (relative to the Llava model) that a PEFT LoRA state dict adapts."""
    return sorted({LORA_KEY.match(key)["module"] for key in peft_state})


def reference_lora_config(adapter_config: dict, modules: list[str], is_trainable: bool) -> LoraConfig:
    if adapter_config.get("peft_type", "LORA") != "LORA":
        raise InputError(
            f"adapter_config.json: peft_type {adapter_config.get('peft_type')!r}, expected 'LORA'"
        )
    if adapter_config.get("bias", "none") != "none" or adapter_config.get("fan_in_fan_out"):
        raise InputError("adapter_config.json: only bias 'none' and fan_in_fan_out false are supported")
    return LoraConfig(
        r=adapter_config["r"],
        lora_alpha=adapter_config["lora_alpha"],
        lora_dropout=adapter_config.get("lora_dropout", 0.0),
        target_modules=modules,  # full names: exactly the remapped modules, nothing matched by suffix
        bias="none",
        task_type="CAUSAL_LM",
        inference_mode=not is_trainable,
    )


def load_non_lora_trainables(model, path: Path) -> None:
    """LLaVA's LoRA runs save fully-tuned modules (e.g. the projector) beside the adapter; load them too."""
    state = read_state_dict(path)
    mapped = {map_original_key(key.removeprefix(PEFT_PREFIX)): tensor for key, tensor in state.items()}
    result = model.load_state_dict(mapped, strict=False)
    if result.unexpected_keys:
        raise InputError(f"{path}: tensors with no place in the model: {result.unexpected_keys[:5]}")


def load_reference_adapter(model, lora_path: Path, state: dict[str, torch.Tensor], is_trainable: bool):
    """Inject the reference paper's adapter (original LLaVA names) into an HF Llava model."""
    weights = adapter_weights_file(lora_path)
    remapped, origin = remap_reference_state_dict(state, str(weights))
    non_lora = lora_path / "non_lora_trainables.bin"
    if non_lora.exists():
        load_non_lora_trainables(model, non_lora)
    config = reference_lora_config(
        read_json_object(lora_path / "adapter_config.json"), lora_modules(remapped), is_trainable
    )
    peft_model = get_peft_model(model, config)
    result = set_peft_model_state_dict(peft_model, remapped)
    unused = [origin.get(k, k) for k in result.unexpected_keys]  # named as in the adapter file
    not_loaded = [k for k in result.missing_keys if ".lora_" in k]
    if unused or not_loaded:
        raise InputError(
            f"{weights}: unused adapter keys {unused[:5]}; LoRA weights not loaded {not_loaded[:5]}"
        )
    if not is_trainable:
        peft_model.eval()
    return peft_model


def load_adapter(model, lora_path: str, *, is_trainable: bool = False) -> PeftModel:
    """PeftModel of model + the adapter at lora_path (this project's PEFT format or the reference's)."""
    path = Path(lora_path)
    if not path.is_dir():
        raise InputError(f"{lora_path}: adapter folder not found")
    if not (path / "adapter_config.json").exists():
        raise InputError(f"{lora_path}: adapter_config.json is missing")
    check_adapter_config(path / "adapter_config.json")
    weights = adapter_weights_file(path)
    state = read_state_dict(weights)
    try:
        if is_reference_format(state):
            return load_reference_adapter(model, path, state, is_trainable)
        with warnings.catch_warnings():
            # peft only warns about LoRA weights it did not find; check_adapter_keys makes that an error.
            warnings.filterwarnings("ignore", message="Found missing adapter keys")
            peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=is_trainable)
    except InputError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        # A shape or rank that does not match the base ("size mismatch"), a target module the base does
        # not have, a config field peft rejects: the adapter does not fit this model.
        raise InputError(f"{lora_path}: adapter does not fit the base model ({first_line(e)})") from None
    check_adapter_keys(peft_model, state, weights)
    return peft_model


def check_adapter_keys(peft_model, state: dict[str, torch.Tensor], weights: Path) -> None:
    """Every key of the adapter file has a place in the model, and every weight the adapter's config puts
    on the model came from the file; else InputError naming the first few keys of each kind.

    The expected keys are what peft itself saves for this model and config (get_peft_model_state_dict),
    so a file with renamed or dropped keys cannot load silently as a zero (or partial) adapter.
    """
    expected = set(get_peft_model_state_dict(peft_model))
    unused = sorted(set(state) - expected)
    not_loaded = sorted(expected - set(state))
    if unused or not_loaded:
        raise InputError(
            f"{weights}: adapter does not fit the model its adapter_config.json describes: "
            f"{len(unused)} key(s) match no module {unused[:3]}; "
            f"{len(not_loaded)} weight(s) missing from the file {not_loaded[:3]}"
        )
