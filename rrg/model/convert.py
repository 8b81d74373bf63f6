"""Convert the original LLaVA-Med v1.5 checkpoint (`llava_mistral`) into transformers' Llava layout.

microsoft/llava-med-v1.5-mistral-7b is saved by the LLaVA-Med code base (model_type `llava_mistral`),
which transformers cannot load. The converted folder is a plain `LlavaForConditionalGeneration` folder:
config, safetensors shards + index, tokenizer with `<image>` (id 32000) and the chat template, processor.

The conversion streams one source shard at a time (one output shard per source shard), so peak memory
stays near the size of one shard (~5 GB for the 7B model).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import LlavaConfig, LlavaForConditionalGeneration

from rrg.io import InputError, atomic_write_json, read_json_object, replace_dir
from rrg.model.config import IMAGE_TOKEN_ID, VOCAB_SIZE, llava_med_config
from rrg.model.processor import build_processor, build_tokenizer
from rrg.model.tiny import generation_config

ORIGINAL_MODEL_TYPE = "llava_mistral"
HF_MODEL_TYPE = "llava"
CLIP_HEAD_DIM = 64  # every OpenAI CLIP vision tower (B/32 ... L/14-336) uses 64-dim attention heads
VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
SOURCE_FILES = ["config.json", "model.safetensors.index.json", "*.safetensors", "tokenizer.model"]

# Original LLaVA name -> transformers 5 LlavaForConditionalGeneration name, first match wins.
KEY_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^model\.embed_tokens\."), "model.language_model.embed_tokens."),
    (re.compile(r"^model\.layers\."), "model.language_model.layers."),
    (re.compile(r"^model\.norm\."), "model.language_model.norm."),
    (re.compile(r"^lm_head\."), "lm_head."),
    (re.compile(r"^model\.mm_projector\.0\."), "model.multi_modal_projector.linear_1."),
    (re.compile(r"^model\.mm_projector\.2\."), "model.multi_modal_projector.linear_2."),
    # transformers 5 (5.17 and later) flattens CLIPVisionModel: no `vision_model.` level any more.
    (re.compile(r"^" + re.escape(VISION_PREFIX)), "model.vision_tower."),
]
# Rows for `<image>` (id 32000) appended to these: the embedding row is overwritten by image features
# anyway, and the zero output row is suppressed at generation.
VOCAB_PADDED = {"model.embed_tokens.weight", "lm_head.weight"}

# Source config fields the Llava architecture (and this converter) reproduces only at these values.
REQUIRED_FIELDS = {
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "mm_use_im_start_end": False,
    "mm_use_im_patch_token": False,
    "image_aspect_ratio": "pad",
    "vocab_size": IMAGE_TOKEN_ID,
    "rope_theta": 1e6,
    "sliding_window": None,
    "tie_word_embeddings": False,
}


def map_original_key(key: str) -> str:
    """HF Llava name of one original tensor name; an unknown name is an InputError."""
    for pattern, replacement in KEY_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    raise InputError(f"tensor {key!r} has no place in the Llava layout (unknown original LLaVA name)")


def map_original_keys(keys: Iterable[str]) -> dict[str, str]:
    """original -> HF for every key; fails if two keys land on one name."""
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key in keys:
        target = map_original_key(key)
        if target in seen:
            raise InputError(f"tensors {seen[target]!r} and {key!r} both map to {target!r}")
        seen[target] = key
        mapping[key] = target
    return mapping


def expected_hf_keys(config: LlavaConfig) -> set[str]:
    """Parameter names of LlavaForConditionalGeneration(config), built without allocating weights."""
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    return set(model.state_dict())


def source_weight_map(src: Path) -> dict[str, str]:
    """tensor name -> shard file name, from the index (or the single model.safetensors)."""
    index = src / "model.safetensors.index.json"
    if index.exists():
        return read_json_object(index)["weight_map"]
    single = src / "model.safetensors"
    if not single.exists():
        raise InputError(f"{src}: neither model.safetensors.index.json nor model.safetensors")
    with safe_open(str(single), "pt") as f:
        return dict.fromkeys(f.keys(), single.name)


def tensor_shape(src: Path, weight_map: dict[str, str], key: str) -> list[int]:
    if key not in weight_map:
        raise InputError(f"{src}: tensor {key!r} is missing")
    with safe_open(str(src / weight_map[key]), "pt") as f:
        return list(f.get_slice(key).get_shape())


def hf_config_from_original(src: Path, original: dict, weight_map: dict[str, str]) -> LlavaConfig:
    """LlavaConfig for the source: text sizes from its config.json, CLIP sizes from its tensor shapes.

    The source config names the CLIP tower only by Hub id (`mm_vision_tower`), so the vision sizes are
    read off the weights themselves: that also makes tiny test checkpoints convert with no special case.
    """
    if original.get("model_type") != ORIGINAL_MODEL_TYPE:
        raise InputError(
            f"{src}/config.json: model_type {original.get('model_type')!r}, expected {ORIGINAL_MODEL_TYPE!r}"
        )
    for field, value in REQUIRED_FIELDS.items():
        if original.get(field) != value:
            raise InputError(
                f"{src}/config.json: {field}={original.get(field)!r}; this converter supports only {value!r}"
            )
    vision_layers = {
        int(m.group(1))
        for k in weight_map
        if (m := re.match(re.escape(VISION_PREFIX) + r"encoder\.layers\.(\d+)\.", k))
    }
    if not vision_layers:
        raise InputError(f"{src}: no CLIP vision tower tensors ({VISION_PREFIX}...)")
    vision_hidden, _, patch, _ = tensor_shape(
        src, weight_map, VISION_PREFIX + "embeddings.patch_embedding.weight"
    )
    positions, _ = tensor_shape(src, weight_map, VISION_PREFIX + "embeddings.position_embedding.weight")
    vision_intermediate, _ = tensor_shape(src, weight_map, VISION_PREFIX + "encoder.layers.0.mlp.fc1.weight")
    image_size = round((positions - 1) ** 0.5) * patch  # positions = patches + CLS
    if original.get("mm_hidden_size") != vision_hidden:
        raise InputError(
            f"{src}/config.json: mm_hidden_size {original.get('mm_hidden_size')} != CLIP width {vision_hidden}"
        )
    config = llava_med_config(
        text_layers=original["num_hidden_layers"],
        hidden_size=original["hidden_size"],
        intermediate_size=original["intermediate_size"],
        heads=original["num_attention_heads"],
        kv_heads=original.get("num_key_value_heads", original["num_attention_heads"]),
        vision_layers=len(vision_layers),
        vision_hidden=vision_hidden,
        vision_intermediate=vision_intermediate,
        vision_heads=vision_hidden // CLIP_HEAD_DIM if vision_hidden >= CLIP_HEAD_DIM else 1,
        image_size=image_size,
        patch_size=patch,
    )
    text = config.text_config
    text.rms_norm_eps = original.get("rms_norm_eps", text.rms_norm_eps)
    text.max_position_embeddings = original.get("max_position_embeddings", text.max_position_embeddings)
    dtype = original.get("torch_dtype") or original.get("dtype")
    if dtype:
        config.dtype = dtype
        text.dtype = dtype
        config.vision_config.dtype = dtype
    return config


def convert_shard(shard: Path, keys: list[str], mapping: dict[str, str]) -> dict[str, torch.Tensor]:
    """Load one source shard's tensors under their HF names, vocab rows padded for `<image>`."""
    out: dict[str, torch.Tensor] = {}
    with safe_open(str(shard), "pt") as f:
        for key in keys:
            tensor = f.get_tensor(key)
            if key in VOCAB_PADDED:
                if tensor.shape[0] != IMAGE_TOKEN_ID:
                    raise InputError(f"{shard}: {key} has {tensor.shape[0]} rows, expected {IMAGE_TOKEN_ID}")
                tensor = torch.cat([tensor, tensor.new_zeros(VOCAB_SIZE - IMAGE_TOKEN_ID, *tensor.shape[1:])])
            out[mapping[key]] = tensor.contiguous()
    return out


def check_shapes(tensors: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], where: Path) -> None:
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(reference[name].shape):
            raise InputError(
                f"{where}: {name} has shape {tuple(tensor.shape)}, the config implies {tuple(reference[name].shape)}"
            )


def write_tokenizer_and_processor(src: Path, dst: Path, config: LlavaConfig) -> None:
    tokenizer_model = src / "tokenizer.model"
    if not tokenizer_model.exists():
        raise InputError(f"{src}: tokenizer.model is missing")
    # Build from tokenizer.model alone, so every source (Hub snapshot, local copy, test) gives one tokenizer.
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(tokenizer_model, Path(tmp) / "tokenizer.model")
        tokenizer = build_tokenizer(tmp)
    if tokenizer.convert_tokens_to_ids("<image>") != IMAGE_TOKEN_ID or len(tokenizer) != VOCAB_SIZE:
        raise InputError(f"{tokenizer_model}: expected a 32,000-token SentencePiece model")
    vision = config.vision_config
    build_processor(tokenizer, image_size=vision.image_size, patch_size=vision.patch_size).save_pretrained(
        dst
    )


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert an original-format LLaVA-Med folder (or Hub id) into an HF Llava folder at dst."""
    src = download_original(str(src)) if not Path(src).is_dir() else Path(src)
    dst = Path(dst)
    original = read_json_object(src / "config.json")
    weight_map = source_weight_map(src)
    config = hf_config_from_original(src, original, weight_map)
    mapping = map_original_keys(weight_map)
    with torch.device("meta"):
        reference = LlavaForConditionalGeneration(config).state_dict()
    missing = sorted(set(reference) - set(mapping.values()))
    if missing:
        raise InputError(f"{src}: no source tensor for {len(missing)} parameter(s), e.g. {missing[:5]}")

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.tmp-"))
    try:
        shards: dict[str, list[str]] = {}
        for key, shard in weight_map.items():
            shards.setdefault(shard, []).append(key)
        out_map: dict[str, str] = {}
        total_size = 0
        for shard in tqdm(sorted(shards), desc="converting shards", unit="shard"):
            tensors = convert_shard(src / shard, shards[shard], mapping)
            check_shapes(tensors, reference, src / shard)
            save_file(tensors, str(tmp / shard), metadata={"format": "pt"})
            out_map.update(dict.fromkeys(tensors, shard))
            total_size += sum(t.numel() * t.element_size() for t in tensors.values())
            del tensors
        atomic_write_json(
            tmp / "model.safetensors.index.json",
            {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(out_map.items()))},
        )
        config.save_pretrained(tmp)
        generation_config().save_pretrained(tmp)
        write_tokenizer_and_processor(src, tmp, config)
        replace_dir(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dst


def download_original(repo_id: str) -> Path:
    """Hub snapshot of an original checkpoint: config, weights and tokenizer.model only."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=SOURCE_FILES))
    except Exception as e:  # noqa: BLE001 - any hub failure means the same thing to the user
        raise InputError(f"{repo_id}: not a local folder, and the Hub download failed ({e})") from e


def write_tiny_original_checkpoint(
    out_dir: str | os.PathLike, reference_dir: str | os.PathLike, *, seed: int = 0
) -> Path:
    """A tiny random checkpoint in the ORIGINAL LLaVA-Med format, for tests and the CPU smoke run.

    reference_dir holds the real checkpoint's config.json, model.safetensors.index.json and
    tokenizer.model (shared/data/llava-med-v1.5-mistral-7b): the tiny one uses the same config fields
    and exactly the real tensor names (layers cut to 2 text / 3 vision), split into 2 shards + index.
    Sizes: text hidden 64, CLIP width 128 (2 heads), 56 px images -> 16 image tokens.
    """
    from transformers import CLIPVisionModel, MistralForCausalLM

    reference_dir, out = Path(reference_dir), Path(out_dir)
    real_config = read_json_object(reference_dir / "config.json")
    real_map = read_json_object(reference_dir / "model.safetensors.index.json")["weight_map"]
    hf = llava_med_config(
        text_layers=2, hidden_size=64, intermediate_size=128, heads=4, kv_heads=2,
        vision_layers=3, vision_hidden=128, vision_intermediate=256, vision_heads=2, image_size=56,
    )  # fmt: skip
    text, vision = hf.text_config, hf.vision_config
    text.vocab_size = IMAGE_TOKEN_ID
    torch.manual_seed(seed)
    tensors = {k: v for k, v in MistralForCausalLM(text).state_dict().items()}
    for key, value in CLIPVisionModel(vision).state_dict().items():
        tensors[VISION_PREFIX + key.removeprefix("vision_model.")] = value
    tensors["model.mm_projector.0.weight"] = torch.empty(text.hidden_size, vision.hidden_size)
    tensors["model.mm_projector.0.bias"] = torch.empty(text.hidden_size)
    tensors["model.mm_projector.2.weight"] = torch.empty(text.hidden_size, text.hidden_size)
    tensors["model.mm_projector.2.bias"] = torch.empty(text.hidden_size)
    # Random values everywhere (norms and biases included), so a mis-mapped tensor changes the output.
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        k: (1.0 if k.endswith("norm.weight") or "layer_norm" in k or "layrnorm.weight" in k else 0.0)
        + 0.1 * torch.randn(v.shape, generator=generator)
        for k, v in tensors.items()
    }

    def kept(key: str) -> bool:
        text_layer = re.match(r"model\.layers\.(\d+)\.", key)
        vision_layer = re.match(re.escape(VISION_PREFIX) + r"encoder\.layers\.(\d+)\.", key)
        if text_layer:
            return int(text_layer.group(1)) < text.num_hidden_layers
        if vision_layer:
            return int(vision_layer.group(1)) < vision.num_hidden_layers
        return True

    expected = {k for k in real_map if kept(k)}
    if expected != set(tensors):
        raise AssertionError(
            f"tiny checkpoint names differ from the real index: {sorted(expected ^ set(tensors))[:5]}"
        )
    # Real shards 1-2 -> tiny shard 1, 3-4 -> tiny shard 2: the text/vision split of the real layout.
    shard_of = {
        k: f"model-0000{1 if real_map[k] < 'model-00003' else 2}-of-00002.safetensors" for k in tensors
    }
    out.mkdir(parents=True, exist_ok=True)
    for shard in sorted(set(shard_of.values())):
        part = {k: v.contiguous() for k, v in tensors.items() if shard_of[k] == shard}
        save_file(part, str(out / shard), metadata={"format": "pt"})
    atomic_write_json(
        out / "model.safetensors.index.json",
        {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
            "weight_map": dict(sorted(shard_of.items())),
        },
    )
    config = dict(real_config)
    config.update(
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        num_hidden_layers=text.num_hidden_layers,
        num_attention_heads=text.num_attention_heads,
        num_key_value_heads=text.num_key_value_heads,
        mm_hidden_size=vision.hidden_size,
        torch_dtype="float32",
    )
    atomic_write_json(out / "config.json", config)
    shutil.copy(reference_dir / "tokenizer.model", out / "tokenizer.model")
    return out
