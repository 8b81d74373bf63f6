"""Merge a LoRA adapter into LLaVA-Med and write a standalone HF Llava folder (+ processor).

    python scripts/merge_lora.py --model_path microsoft/llava-med-v1.5-mistral-7b \
        --lora_path runs/lora/final --out models/llava-med-iuxray-merged

--lora_path takes this project's PEFT adapters, the reference paper's adapter (adapter_model.bin), or an
align run's projector folder (train_lora.py --stage align: the base model is written with that projector).
The result loads with `LlavaForConditionalGeneration.from_pretrained(out)` and needs no peft.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.model.merge import main

if __name__ == "__main__":
    main()
