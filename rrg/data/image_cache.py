"""A one-time resize cache of an image folder: what training and eval read instead of the full-size files.

MIMIC-CXR-JPG's 377,110 images are ~2,500 x 3,000 pixels; the model sees 336 x 336. Decoding a full-size
JPG per sample per epoch is most of the loader's work, so `scripts/resize_cache.py` writes, once, each image
with its longest side cut to `max_side` (512 by default, as Kaggle ships IU X-Ray) into a new folder with
the same relative names. Training and eval use it by `--image_dir CACHE`, with the same split files:

- PNG and JPG keep their name and format (JPG at quality 95); a 16-bit PNG becomes an 8-bit PNG by
  rrg.data.images' rules; an image already within max_side is copied as decoded (no upscaling).
- A DICOM `x.dcm` becomes `x.dcm.png` (8-bit, LUTs applied); rrg.data.entries.resolve_image finds it for the
  split file's `x.dcm`.
- Each file is written to a temporary name and renamed, so a file present is complete: an interrupted
  run resumes where it stopped. `resize_cache.json` records the source folder and max_side; a cache made
  from another folder or at another size is refused, never mixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rrg.data.entries import resolve_image
from rrg.data.images import is_dicom, read_image
from rrg.io import InputError, atomic_write_json

MANIFEST = "resize_cache.json"


def cached_name(name: str, source: Path) -> str:
    """The cache's file name for a source image name (DICOM gets a .png added)."""
    return f"{name}.png" if is_dicom(source) else name


def resize(image: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def cache_one(task: tuple[str, str, str, int]) -> str:
    """Write one resized image (a no-op when it is already there); returns "done" or "kept"."""
    source, target, name, max_side = task
    target_path = Path(target)
    if target_path.is_file():
        return "kept"
    image = resize(read_image(source), max_side)
    pixels = np.asarray(image)
    if (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
        image = image.convert("L")  # an X-ray is gray: one channel is a third of the file and of its decode
    target_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = target_path.with_name(f".{target_path.name}.{os.getpid()}.tmp")
    kind = "JPEG" if target_path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    image.save(tmp, format=kind, **({"quality": 95} if kind == "JPEG" else {}))
    os.replace(tmp, target_path)
    return "done"


def check_manifest(cache_dir: Path, source_dir: Path, max_side: int) -> None:
    manifest = cache_dir / MANIFEST
    wanted = {"source": str(source_dir.resolve()), "max_side": max_side}
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if {k: found.get(k) for k in wanted} != wanted:
            raise InputError(
                f"{manifest}: this cache was made from {found.get('source')} at max_side {found.get('max_side')}, "
                f"not {wanted['source']} at {max_side}: use another --out"
            )
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(manifest, wanted)


def build_cache(
    source_dir: str | os.PathLike, cache_dir: str | os.PathLike, names: Iterable[str], max_side: int = 512,
    workers: int = 1,
) -> dict[str, int]:
    """Resize every named image of source_dir into cache_dir (resumable, parallel over processes)."""
    source_dir, cache_dir = Path(source_dir), Path(cache_dir)
    check_manifest(cache_dir, source_dir, max_side)
    tasks = []
    for name in dict.fromkeys(names):
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(f"image name {name!r} is not inside {source_dir}")
        source = resolve_image(source_dir, name)  # the folder layouts the split files are read with
        tasks.append((str(source), str(cache_dir / cached_name(name, source)), name, max_side))
    counts = {"done": 0, "kept": 0}
    progress = tqdm(total=len(tasks), desc="resizing", unit="image")
    if workers <= 1:
        for result in map(cache_one, tasks):
            counts[result] += 1
            progress.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for result in pool.map(cache_one, tasks, chunksize=16):
                counts[result] += 1
                progress.update()
    progress.close()
    return counts
