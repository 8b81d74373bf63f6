"""Zero-shot reports of the base model on a split file, then their scores.

    python eval/llava.py --json_file data/test_report.json [--image_control blank] [--limit 20]

Writes runs/zero_shot-<json stem>/predictions.jsonl (one line per entry, appended as produced;
--resume continues a killed run) and scores.json beside it. All flags: --help. On several GPUs, each
generating its share into one predictions file:

    accelerate launch --num_processes 4 eval/llava.py --json_file data/test_report.json
"""

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.generate.run import close_processes
from rrg.generate.run import main as run_eval


def main(argv: list[str] | None = None) -> dict:
    return run_eval(argv)


if __name__ == "__main__":
    main()
    close_processes()
