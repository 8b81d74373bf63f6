"""rrg.data.images: one reader for PNG/JPG (8 and 16 bit) and DICOM, each rule checked on a built file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rrg.data import images
from rrg.data.images import read_image
from rrg.io import InputError
from tests.dataset_fixtures import gradient, make_dicom, save_png
from tests.helpers import shared_path

pydicom = pytest.importorskip("pydicom")


def gray(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    return pixels[..., 0].astype(int)


def test_eight_bit_png_and_jpg_are_what_convert_rgb_gives(tmp_path):
    rng = np.random.default_rng(0)
    files = [
        save_png(tmp_path / "l.png", rng.integers(0, 256, (20, 30), dtype=np.uint8)),
        save_png(tmp_path / "rgb.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
    ]
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(tmp_path / "x.jpg")
    files.append(tmp_path / "x.jpg")
    real = shared_path("iu_xray/images")
    files += sorted(real.glob("*.png"))[:2]
    for path in files:
        with Image.open(path) as image:
            expected = image.convert("RGB")
        assert read_image(path).tobytes() == expected.tobytes(), path


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    path = save_png(tmp_path / "x16.png", gradient(high=4095))
    with Image.open(path) as image:
        assert image.mode.startswith("I")
        clipped = np.asarray(image.convert("RGB"))[..., 0]
    assert (clipped == 255).mean() > 0.9  # what convert("RGB") alone does to a 12-bit ramp
    pixels = gray(read_image(path))
    assert pixels.min() == 0 and pixels.max() == 255
    assert (np.diff(pixels[0]) >= 0).all() and (pixels == 255).mean() < 0.05


@pytest.mark.parametrize("bits,high", [(8, 255), (12, 4095), (16, 65535)])
def test_dicom_monochrome2_bit_depths(tmp_path, bits, high):
    dtype = np.uint8 if bits == 8 else np.uint16
    path = make_dicom(tmp_path / "x.dcm", gradient(high=high, dtype=dtype), bits_stored=bits)
    pixels = gray(read_image(path))
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255
    assert (np.diff(pixels[0]) >= 0).all()


def test_dicom_monochrome1_is_inverted(tmp_path):
    ramp = gradient(high=4095)
    m1 = gray(read_image(make_dicom(tmp_path / "m1.dcm", ramp, "MONOCHROME1", 12)))
    m2 = gray(read_image(make_dicom(tmp_path / "m2.dcm", ramp, "MONOCHROME2", 12)))
    assert m1[0, 0] == 255 and m1[0, -1] == 0
    assert (m1 == 255 - m2).all()


def test_dicom_window_is_applied(tmp_path):
    ramp = gradient(high=4095)
    # a narrow window around the middle: everything left of it black, right of it white
    path = make_dicom(tmp_path / "w.dcm", ramp, bits_stored=12, window=(2048, 400))
    pixels = gray(read_image(path))
    x = np.linspace(0, 4095, ramp.shape[1])
    assert (pixels[0][x < 1800] == 0).all() and (pixels[0][x > 2300] == 255).all()
    assert 0 < pixels[0][np.argmin(abs(x - 2048))] < 255


def test_dicom_rescale_is_applied_before_the_window(tmp_path):
    ramp = gradient(high=4095)
    # slope 1, intercept -1024 (CT-like): the window centred at 1024 in output units is the raw middle
    path = make_dicom(tmp_path / "r.dcm", ramp, bits_stored=12, window=(1024, 400), rescale=(1, -1024))
    pixels = gray(read_image(path))
    x = np.linspace(0, 4095, ramp.shape[1])
    assert (pixels[0][x < 1800] == 0).all() and (pixels[0][x > 2300] == 255).all()


def test_dicom_rgb(tmp_path):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    image = read_image(make_dicom(tmp_path / "c.dcm", rgb, "RGB", 8))
    assert np.asarray(image)[0, 0].tolist() == [200, 0, 0]


def test_dicom_rle_compressed_decodes_natively(tmp_path):
    from pydicom.uid import RLELossless

    ramp = gradient(high=4095)
    plain = read_image(make_dicom(tmp_path / "p.dcm", ramp, bits_stored=12))
    packed = read_image(make_dicom(tmp_path / "rle.dcm", ramp, bits_stored=12, transfer_syntax=RLELossless))
    assert plain.tobytes() == packed.tobytes()


def test_dicom_without_a_decoder_is_one_line_naming_the_file(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000

    path = make_dicom(tmp_path / "j2k.dcm", gradient(high=4095), bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a real codestream"])
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path)
    with pytest.raises(InputError) as e:
        read_image(path)
    message = str(e.value)
    assert str(path) in message and "JPEG 2000" in message and "\n" not in message


def test_bad_files_are_one_line(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for path in (tmp_path / "bad.png", tmp_path / "missing.png"):
        with pytest.raises(InputError, match=str(path)):
            read_image(path)
    (tmp_path / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x01" * 10)
    with pytest.raises(InputError, match="bad.dcm"):
        read_image(tmp_path / "bad.dcm")


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    path = save_png(tmp_path / "big.png", np.zeros((40, 40), dtype=np.uint8))
    dcm = make_dicom(tmp_path / "big.dcm", gradient(40, 40))
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    for p in (path, dcm):
        with pytest.raises(InputError, match="decompression-bomb"):
            read_image(p)
