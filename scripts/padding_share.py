"""How much of a training micro-batch is padding: the most that sequence packing could save.

    python scripts/padding_share.py --json_file data/train_report.json --tokenizer_dir <llava-med folder>

Tokenises every entry as train_lora.py does (rrg.train.collate: prompt with 576 tokens an image + report + `</s>`),
groups them into micro-batches as train_lora.py does (rrg.train.collate.length_grouped_batches with its --seed, over
a few epochs of its shuffles), pads each to its longest sample rounded up to a multiple of 8 (train_lora.py's
Collator), and prints padded positions / all positions per micro-batch size. Images are not opened: only the
number of views counts. No GPU.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split


from rrg.bench.padding_share import main  # noqa: E402

if __name__ == "__main__":
    main()
