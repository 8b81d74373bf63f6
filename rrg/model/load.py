"""Load LLaVA-Med v1.5 as a plain transformers `LlavaForConditionalGeneration` (+ processor, + LoRA).

Accepted model paths: an HF Llava folder or Hub id (used as is), or the original LLaVA-Med checkpoint
(`llava_mistral`, e.g. microsoft/llava-med-v1.5-mistral-7b), converted once into a cache folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from transformers import BitsAndBytesConfig, LlavaForConditionalGeneration, LlavaProcessor

from rrg.io import InputError, read_json_object
from rrg.model import processor as processor_lib
from rrg.model.convert import HF_MODEL_TYPE, ORIGINAL_MODEL_TYPE, convert_checkpoint
from rrg.model.kernels.attention import ATTENTION, avoid_cudnn_attention
from rrg.model.tiny import generation_config

# Kept in bf16 under 4-bit: CLIP and the projector are small and precision-sensitive, and lm_head
# is the output layer (the QLoRA recipe leaves it unquantised too).
# Full module-name prefixes: transformers 5 matches these patterns from the start of the name
# (re.match), so a bare "vision_tower" would not keep "model.vision_tower...." out of 4-bit.
UNQUANTIZED_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def default_cache_root() -> Path:
    return Path(os.environ.get("RRG_CACHE") or Path.home() / ".cache" / "rrg" / "converted")


def read_model_config(model_path: str) -> dict:
    """config.json of a local folder or a Hub id, as a dict."""
    if Path(model_path).is_dir():
        return read_json_object(Path(model_path) / "config.json")
    from huggingface_hub import hf_hub_download

    try:
        return read_json_object(Path(hf_hub_download(model_path, "config.json")))
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - not found, offline, bad id: all mean "cannot use this path"
        raise InputError(
            f"{model_path}: not a model folder, and no Hub model config could be read ({e})"
        ) from e


def converted_dir_name(model_path: str) -> str:
    """Cache folder name: the Hub id, or a local folder's name plus a hash of its absolute path."""
    if Path(model_path).is_dir():
        resolved = str(Path(model_path).resolve())
        return f"{Path(resolved).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:10]}"
    return model_path.replace("/", "--")


def resolve_model_path(model_path: str, cache_dir: str | None = None) -> str:
    """A path from_pretrained can load: HF Llava as is; the original format converted once and cached."""
    model_type = read_model_config(model_path).get("model_type")
    if model_type == HF_MODEL_TYPE:
        return model_path
    if model_type != ORIGINAL_MODEL_TYPE:
        raise InputError(
            f"{model_path}: model_type {model_type!r}; expected {HF_MODEL_TYPE!r} or {ORIGINAL_MODEL_TYPE!r}"
        )
    target = Path(cache_dir) if cache_dir else default_cache_root()
    target = target / converted_dir_name(model_path)
    if (target / "config.json").exists():  # conversion writes the folder atomically: present = complete
        return str(target)
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    # Several ranks of one training job may resolve at once: one converts, the others wait for it.
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():
            convert_checkpoint(model_path, target)
    return str(target)


def places_on_gpu(device_map) -> bool:
    """Whether from_pretrained(device_map=...) puts the weights on a GPU ("auto", "cuda:0", {"": 0}, ...)."""
    if device_map is None or not torch.cuda.is_available():
        return False
    targets = device_map.values() if isinstance(device_map, dict) else [device_map]
    return any(str(target) not in ("cpu", "disk") for target in targets)


def default_dtype(device_map=None) -> torch.dtype:
    """bf16 where the weights go to a GPU, fp32 on the CPU (bf16 matmuls there are slow and less exact)."""
    return torch.bfloat16 if places_on_gpu(device_map) else torch.float32


def quantization_config() -> BitsAndBytesConfig:
    """QLoRA 4-bit: nf4, double quantisation, bf16 compute; CLIP, projector and lm_head stay bf16."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=UNQUANTIZED_MODULES,
    )


def load_base_model(
    model_path: str,
    *,
    dtype: torch.dtype | None = None,
    load_in_4bit: bool = False,
    attn_implementation: str = ATTENTION,
    device_map=None,
) -> LlavaForConditionalGeneration:
    """LLaVA-Med as LlavaForConditionalGeneration: bf16 on a GPU, fp32 on the CPU unless dtype says otherwise.

    The model stays where device_map puts it (CPU when None); 4-bit loading needs CUDA and defaults to
    this process's GPU (LOCAL_RANK), as bitsandbytes weights cannot be moved after loading. With SDPA
    attention, PyTorch's cuDNN attention is turned off for the process (rrg.model.kernels.attention.avoid_cudnn_attention).
    """
    path = resolve_model_path(model_path)
    if attn_implementation in (ATTENTION, "sdpa"):
        avoid_cudnn_attention()
    kwargs = {}
    if load_in_4bit:
        if not torch.cuda.is_available():
            raise InputError("--load_in_4bit needs a CUDA GPU (bitsandbytes 4-bit layers run on CUDA only)")
        kwargs["quantization_config"] = quantization_config()
        dtype = dtype or torch.bfloat16
        if device_map is None:
            device_map = {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = LlavaForConditionalGeneration.from_pretrained(
        path,
        dtype=dtype or default_dtype(device_map),
        attn_implementation=attn_implementation,
        device_map=device_map,
        **kwargs,
    )
    # `<image>` (id 32000) has an untrained output row: never generate it. eos `</s>`=2, pad `<unk>`=0.
    model.generation_config = generation_config()
    return model


def load_processor(model_path: str) -> LlavaProcessor:
    return processor_lib.load_processor(resolve_model_path(model_path))


def load_adapter(model, lora_path: str, *, is_trainable: bool = False):
    """Wrap model with a LoRA adapter: this project's PEFT folders or the reference paper's adapter."""
    from rrg.model.adapters import load_adapter as _load_adapter

    return _load_adapter(model, lora_path, is_trainable=is_trainable)


def load_model(
    model_path: str, lora_path: str | None = None, *, merge: bool = False, **base_kwargs
) -> tuple[torch.nn.Module, LlavaProcessor]:
    """(model, processor); with lora_path the model is a PeftModel, or a plain Llava model when merged.

    A projector folder (rrg.train.align) as lora_path is loaded into the model's projector: a plain Llava model."""
    from rrg.train.align import is_projector_folder, load_projector

    model = load_base_model(model_path, **base_kwargs)
    processor = load_processor(model_path)
    if lora_path and is_projector_folder(lora_path):  # an --stage align run's output: no LoRA to merge
        load_projector(model, lora_path)
    elif lora_path:
        if merge and base_kwargs.get("load_in_4bit"):
            raise ValueError("merging an adapter needs an unquantised base model (drop --load_in_4bit)")
        model = load_adapter(model, lora_path, is_trainable=False)
        if merge:
            model = model.merge_and_unload()
    elif merge:
        raise ValueError("merge=True needs a lora_path")
    model.eval()
    return model, processor
