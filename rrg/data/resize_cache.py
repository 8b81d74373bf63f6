"""Resize an image folder once (longest side --max_side) into a cache that training and eval read instead.

    python scripts/resize_cache.py --image_dir data/mimic-cxr-jpg --json_file data/mimic/train_report.json \
        data/mimic/val_report.json data/mimic/test_report.json --out data/mimic-cxr-jpg-512
    python train_lora.py ... --image_dir data/mimic-cxr-jpg-512      # the same split files

Only the images the split files list are resized (every image below --image_dir without --json_file).
Parallel over --workers processes, resumable (a finished image is never redone), with a progress bar.
See rrg/data/image_cache.py for the formats and docs/datasets.md for what it saves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.entries import load_entries
from rrg.data.image_cache import build_cache
from rrg.data.own_images import IMAGE_SUFFIXES
from rrg.io import InputError


@dataclass
class ResizeCacheConfig:
    image_dir: str = flag(help="the folder of full-size images (the --image_dir the split files use)", nonempty=True)
    out: str = flag(help="the cache folder to write (then train/eval with --image_dir OUT)", nonempty=True)
    json_file: list[str] = flag(default_factory=list, help="split files whose images to resize (default: all)",
                                nargs="*")
    max_side: int = flag(512, "longest side of the cached images, pixels", ge=64, le=8192)
    workers: int = flag(os.cpu_count() or 1, "processes", ge=1, le=256)


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    cfg = parse_flags(ResizeCacheConfig, argv)
    source = Path(cfg.image_dir)
    if not source.is_dir():
        raise InputError(f"--image_dir {source}: folder not found")
    if Path(cfg.out).resolve() == source.resolve():
        raise InputError("--out must be a new folder, not --image_dir itself")
    if cfg.json_file:
        names = [name for path in cfg.json_file for entry in load_entries(path) for name in entry.images]
    else:
        names = sorted(str(p.relative_to(source)) for p in source.rglob("*")
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    counts = build_cache(source, cfg.out, names, cfg.max_side, cfg.workers)
    print(f"resized {counts['done']} images, {counts['kept']} already cached, into {cfg.out}")
    return 0
