"""Inputs of the CPU smoke run: a small Kaggle-shaped IU X-Ray folder and a tiny random LLaVA-Med
checkpoint in the ORIGINAL format (so the run also exercises the on-the-fly conversion).

    python scripts/make_smoke_inputs.py --out smoke_out [--studies 40]
Needs LLaVA-Med's config, weight index and tokenizer.model from the shared data folder
($RRG_SHARED_DATA, default ../shared/data); uses its Kaggle CSVs when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rrg.cli import exits_on_input_error, flag, parse_flags, shared_data_dir
from rrg.data.sample import write_sample_dataset
from rrg.io import InputError
from rrg.model.convert import write_tiny_original_checkpoint

REPO = Path(__file__).resolve().parents[2]


@dataclass
class SmokeInputSettings:
    out: Path = flag(Path("smoke_out"), "folder to write the sample dataset and the tiny checkpoint into")
    studies: int = flag(40, "studies in the sample dataset", ge=1)
    shared_data: Path = flag(
        shared_data_dir(), "the shared data folder ($RRG_SHARED_DATA, else ../shared/data)"
    )


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    args = parse_flags(SmokeInputSettings, argv, description=__doc__)
    llava_dir = args.shared_data / "llava-med-v1.5-mistral-7b"
    needed = [llava_dir / name for name in ("config.json", "model.safetensors.index.json", "tokenizer.model")]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise InputError(f"missing {', '.join(missing)}: set RRG_SHARED_DATA to the shared data folder")
    kaggle = write_sample_dataset(args.out / "kaggle", args.studies, kaggle_dir=args.shared_data / "iu_xray")
    model = write_tiny_original_checkpoint(args.out / "tiny-llava-med-original", llava_dir)
    print(f"sample dataset: {kaggle}\ntiny original-format model: {model}")
