"""Images/s of the training loader alone (no model): full-size MIMIC-like JPGs, then their resize cache.

    python scripts/benchmark_loader.py --out runs/loader_bench --images 256 --workers 4

Writes --images synthetic grayscale JPGs of --height x --width (MIMIC-CXR-JPG's are ~2,500 x 3,000; smooth
anatomy-like shading plus noise, so JPEG decoding costs what a radiograph's does) into --out/full, resizes them
with rrg.data.image_cache into --out/cache_<max_side>, then runs train_lora.py's loader (rrg.train.collate.ReportDataset:
rrg.data.images decode + LLaVA-Med's image processor, 336 x 336 padded to square) through a torch DataLoader with
--workers processes, over each folder, and prints images/s (the first --warmup batches not counted) and
writes them to --out/loader_benchmark.json. The figures depend on the machine: run it on the training box.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from rrg.cli import exits_on_input_error, flag, parse_flags  # noqa: E402
from rrg.data.entries import resolve_image  # noqa: E402
from rrg.data.image_cache import build_cache  # noqa: E402
from rrg.io import atomic_write_json  # noqa: E402
from rrg.model.processor import build_image_processor  # noqa: E402
from rrg.train.collate import EncodedSample, ReportDataset  # noqa: E402


@dataclass
class LoaderBenchConfig:
    out: str = flag("runs/loader_bench", "folder for the synthetic images, the cache and the result", nonempty=True)
    images: int = flag(256, "synthetic images to write and load", ge=8, le=100_000)
    height: int = flag(3000, "image height, pixels", ge=64, le=8192)
    width: int = flag(2500, "image width, pixels", ge=64, le=8192)
    max_side: int = flag(512, "the resize cache's longest side", ge=64, le=8192)
    workers: int = flag(4, "DataLoader workers (train_lora.py's --num_workers default is 4)", ge=0, le=256)
    batch_size: int = flag(16, "images per batch (train_lora.py's per-device --batch_size)", ge=1, le=1024)
    warmup: int = flag(2, "batches not timed (worker start-up)", ge=0, le=1000)
    cache_workers: int = flag(os.cpu_count() or 1, "processes that write the images and build the cache (timed apart)", ge=1, le=256)


def synthetic_xray(index: int, height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = 0.5 + 0.3 * np.sin(x / width * np.pi) * np.cos((y / height - 0.4) * np.pi)
    shade += rng.normal(0, 0.04, (height, width)).astype(np.float32)
    return Image.fromarray(np.clip(shade * 255, 0, 255).astype(np.uint8), mode="L")


def write_one(task: tuple[str, int, int, int]) -> None:
    path, index, height, width = task
    target = Path(path)
    if not target.is_file():  # resumable: a rerun reuses what is there
        tmp = target.with_name(f".{target.name}.tmp")
        synthetic_xray(index, height, width).save(tmp, format="JPEG", quality=95)
        os.replace(tmp, target)


def write_images(folder: Path, cfg: LoaderBenchConfig) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"img{i:06d}.jpg" for i in range(cfg.images)]
    tasks = [(str(folder / name), i, cfg.height, cfg.width) for i, name in enumerate(names)]
    # writing a 7.5-megapixel JPEG takes ~0.5 s of one core: spread it like the cache build
    with ProcessPoolExecutor(cfg.cache_workers) as pool:
        for _ in tqdm(pool.map(write_one, tasks, chunksize=4), total=len(tasks), desc="synthetic JPGs", unit="image"):
            pass
    return names


def loader_rate(folder: Path, names: list[str], cfg: LoaderBenchConfig) -> float:
    samples = [EncodedSample([1, 2], [-100, 2], [str(resolve_image(folder, n))], n) for n in names]
    dataset = ReportDataset(samples, build_image_processor())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=list,
        prefetch_factor=4 if cfg.workers > 0 else None, persistent_workers=False,
    )
    counted, start = 0, None
    for batch_index, batch in enumerate(tqdm(loader, desc=f"loading {folder.name}", unit="batch")):
        if batch_index == cfg.warmup:
            start = time.perf_counter()
        if batch_index >= cfg.warmup:
            counted += len(batch)
    if start is None or counted == 0:
        raise SystemExit("error: --images too few for --warmup batches: raise --images")
    return counted / (time.perf_counter() - start)


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    cfg = parse_flags(LoaderBenchConfig, argv)
    out = Path(cfg.out)
    full = out / "full"
    names = write_images(full, cfg)
    cache = out / f"cache_{cfg.max_side}"
    started = time.perf_counter()
    counts = build_cache(full, cache, names, cfg.max_side, cfg.cache_workers)
    cache_seconds = time.perf_counter() - started
    result = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "settings": vars(cfg),
        "full_size_images_per_s": round(loader_rate(full, names, cfg), 2),
        "cached_images_per_s": round(loader_rate(cache, names, cfg), 2),
        # only meaningful when this run resized them all ("kept" 0): a rerun reuses the cache
        "cache_build": {**counts, "seconds": round(cache_seconds, 2)},
    }
    atomic_write_json(out / "loader_benchmark.json", result)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
