"""Merge a LoRA adapter into LLaVA-Med and write a standalone HF Llava folder (+ processor).

    python scripts/merge_lora.py --model_path microsoft/llava-med-v1.5-mistral-7b \
        --lora_path runs/lora/final --out models/llava-med-iuxray-merged

--lora_path takes this project's PEFT adapters, the reference paper's adapter (adapter_model.bin), or an
align run's projector folder (train_lora.py --stage align: the base model is written with that projector).
The result loads with `LlavaForConditionalGeneration.from_pretrained(out)` and needs no peft.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.io import replace_dir
from rrg.model.load import load_model

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class MergeArgs:
    model_path: str = flag(help="Base model: HF Llava folder/id or original LLaVA-Med id/folder.", nonempty=True)
    lora_path: str = flag(help="Adapter folder (PEFT, or the reference paper's adapter).", nonempty=True)
    out: str = flag(help="Output folder; replaced atomically if present.", nonempty=True)
    dtype: str = flag("auto", "Weights dtype of the merged model.", choices=["auto", *DTYPES])
    device: str = flag("cpu", "Where to merge: cpu or cuda (faster, needs ~16 GB).", nonempty=True)


@exits_on_input_error
def main(argv: list[str] | None = None) -> Path:
    args = parse_flags(MergeArgs, argv, description=__doc__)
    model, processor = load_model(
        args.model_path,
        args.lora_path,
        merge=True,
        dtype=DTYPES.get(args.dtype),
        device_map={"": args.device},
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"merged {args.lora_path} into {args.model_path} -> {out}")
    return out
