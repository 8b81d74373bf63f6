"""Convert the original LLaVA-Med v1.5 checkpoint into a transformers Llava folder.

    python scripts/convert_llava_med.py microsoft/llava-med-v1.5-mistral-7b models/llava-med-v1.5-hf

SRC is a Hub id or a local folder in the original (`llava_mistral`) format; DST becomes a folder that
`LlavaForConditionalGeneration.from_pretrained` and `rrg.model.load_model` load. Streams shard by shard.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import argparse

from rrg.cli import exits_on_input_error
from rrg.convert import convert_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="Hub id or local folder of the original LLaVA-Med checkpoint")
    parser.add_argument("dst", help="output folder (HF Llava layout); replaced atomically if present")
    return parser.parse_args(argv)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = convert_checkpoint(args.src, args.dst)
    print(f"converted {args.src} -> {out}")


if __name__ == "__main__":
    main()
