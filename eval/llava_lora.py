"""Reports of the base model with a LoRA adapter (ours or the reference paper's), then their scores.

    python eval/llava_lora.py --lora_path LoRA_Weight --json_file data/test_report.json

Writes runs/lora-<json stem>/predictions.jsonl (one line per entry, appended as produced;
--resume continues a killed run) and scores.json beside it. All flags: --help. On several GPUs, each
generating its share into one predictions file:

    accelerate launch --num_processes 4 eval/llava_lora.py --lora_path LoRA_Weight --json_file ...
"""

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.generate.run import close_processes
from rrg.generate.run import main as run_eval


def main(argv: list[str] | None = None) -> dict:
    return run_eval(argv, require_adapter=True)


if __name__ == "__main__":
    main()
    close_processes()
