"""Convert the original LLaVA-Med v1.5 checkpoint into a transformers Llava folder.

    python scripts/convert_llava_med.py microsoft/llava-med-v1.5-mistral-7b models/llava-med-v1.5-hf

SRC is a Hub id or a local folder in the original (`llava_mistral`) format; DST becomes a folder that
`LlavaForConditionalGeneration.from_pretrained` and `rrg.model.load.load_model` load. Streams shard by shard.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from dataclasses import dataclass

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.model.convert import convert_checkpoint


@dataclass
class ConvertArgs:
    src: str = flag(help="Hub id or local folder of the original LLaVA-Med checkpoint.", positional=True)
    dst: str = flag(help="Output folder (HF Llava layout); replaced atomically if present.", positional=True)


def parse_args(argv: list[str] | None = None) -> ConvertArgs:
    return parse_flags(ConvertArgs, argv, description=__doc__)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = convert_checkpoint(args.src, args.dst)
    print(f"converted {args.src} -> {out}")


if __name__ == "__main__":
    main()
