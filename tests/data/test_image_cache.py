"""rrg.data.image_cache / scripts/resize_cache.py: resized copies read through the same split files, resumably."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rrg.data.entries import resolve_image
from rrg.data.image_cache import build_cache
from rrg.data.images import read_image
from rrg.io import InputError
from tests.dataset_fixtures import gradient, make_dicom, save_jpg, save_png


def source_folder(root):
    save_jpg(root / "files" / "p10" / "big.jpg", size=(900, 1200))
    save_png(root / "small.png", np.full((20, 30), 7, dtype=np.uint8))
    save_png(root / "deep16.png", gradient(600, 800, high=4095))
    make_dicom(root / "scan.dcm", gradient(700, 500, high=4095), "MONOCHROME1", 12)
    return root


NAMES = ["files/p10/big.jpg", "small.png", "deep16.png", "scan.dcm"]


def test_cache_sizes_formats_and_lookup(tmp_path):
    source = source_folder(tmp_path / "src")
    cache = tmp_path / "cache"
    assert build_cache(source, cache, NAMES, max_side=256) == {"done": 4, "kept": 0}
    for name in NAMES:
        cached = resolve_image(cache, name)  # what training and eval do with --image_dir CACHE
        assert cached.parent.is_relative_to(cache)
        image = read_image(cached)
        assert max(image.size) <= 256
    assert resolve_image(cache, "scan.dcm").name == "scan.dcm.png"
    with Image.open(cache / "files/p10/big.jpg") as jpg:
        assert jpg.format == "JPEG" and jpg.size == (192, 256) and jpg.mode == "L"
    # no upscaling: the small image is its decoded self
    assert read_image(cache / "small.png").tobytes() == read_image(source / "small.png").tobytes()
    # the 16-bit PNG and the MONOCHROME1 DICOM went through rrg.data.images' rules (scaled, inverted)
    deep = np.asarray(read_image(cache / "deep16.png"))[..., 0]
    assert deep[:, 0].max() < 5 and deep[:, -1].min() > 250
    scan = np.asarray(read_image(cache / "scan.dcm.png"))[..., 0]
    assert scan[:, 0].min() > 250 and scan[:, -1].max() < 5


def test_resumes_and_refuses_another_configuration(tmp_path):
    source = source_folder(tmp_path / "src")
    cache = tmp_path / "cache"
    build_cache(source, cache, NAMES[:2], max_side=256)
    stamp = (cache / "small.png").stat().st_mtime_ns
    assert build_cache(source, cache, NAMES, max_side=256) == {"done": 2, "kept": 2}
    assert (cache / "small.png").stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match="resize_cache.json: this cache was made from .* at max_side 256"):
        build_cache(source, cache, NAMES, max_side=512)
    with pytest.raises(InputError, match="not inside"):
        build_cache(source, cache, ["../x.png"], max_side=256)


@pytest.mark.slow
def test_script_in_parallel(tmp_path):
    from rrg.data import resize_cache as module

    source = source_folder(tmp_path / "src")
    assert module.main(["--image_dir", str(source), "--out", str(tmp_path / "c"), "--workers", "2", "--max_side", "128"]) == 0
    assert sorted(p.name for p in (tmp_path / "c").rglob("*.*") if p.suffix != ".json") == [
        "big.jpg", "deep16.png", "scan.dcm.png", "small.png"]
