"""Reading one image file as the 8-bit RGB picture the model sees: PNG, JPG and DICOM, any bit depth.

Every image the package reads (IU X-Ray, MIMIC-CXR-JPG, CheXpert Plus, a folder of the user's own
images, a single image given to the API) goes through `read_image`, so they all get the same rules:

- 8-bit PNG/JPG (modes L, RGB, P, LA, RGBA): PIL's `convert("RGB")`, exactly as before (byte-identical).
- 16-bit / 32-bit grayscale PNG or TIFF (modes I;16*, I, F): scaled from the image's own min..max to
  0..255. PIL's `convert("RGB")` would clip every value above 255 to white, and a 16-bit X-ray is nearly
  all above 255; the real bit range (12 bits in a 16-bit container is common) is not recorded in a PNG,
  so the image's own range is the one that is known.
- DICOM (by its "DICM" preamble or a .dcm/.dicom name), through pydicom: the modality LUT (rescale
  slope/intercept) and the first VOI LUT or window are applied by pydicom's own functions, MONOCHROME1
  (white = low values) is inverted, and the result is scaled from its min..max to 0..255. Compressed
  transfer syntaxes decode through whichever pixel-data plugins pydicom finds installed (pylibjpeg,
  gdcm, ...); when none can, the error is one line naming the file and the transfer syntax.

PIL's decompression-bomb guard applies to all of them: an image of more than MAX_PIXELS pixels is a
one-line InputError naming the file, never a silent multi-gigabyte decode.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rrg.io import InputError

# PIL's own default (~89 M pixels): MIMIC-CXR's largest images (~4,000 x 5,000) are well inside it.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
EIGHT_BIT_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "PA", "La", "RGBa", "RGBX"}
DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | os.PathLike) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble then "DICM" (the suffix is trusted when shorter)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            if f.read(4) == b"DICM":
                return True
    except OSError:
        return False
    return str(path).lower().endswith(DICOM_SUFFIXES)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scale an array from its own min..max to 0..255 (a flat image becomes all 0)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError("pixel values are not finite")
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.rint((pixels - low) * (255.0 / (high - low))).astype(np.uint8)


def _check_size(width: int, height: int, where: str) -> None:
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{where}: image of {width} x {height} pixels is over the decompression-bomb limit of {MAX_PIXELS:,}"
        )


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in EIGHT_BIT_MODES:
        return image.convert("RGB")
    # I;16, I;16B, I;16L, I (32-bit), F: a high-bit-depth single channel
    return Image.fromarray(to_uint8(np.asarray(image)), mode="L").convert("RGB")


def rgb_image(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of an already opened PIL image, by the same rules as read_image."""
    return _pil_to_rgb(image)


def read_pil(path: Path, where: str) -> Image.Image:
    with warnings.catch_warnings():
        # PIL only warns between MAX_PIXELS and twice that; a warning here is an error like the rest.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as opened:
                _check_size(*opened.size, where)
                return _pil_to_rgb(opened)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise InputError(f"{where}: {e}") from None


def read_dicom(path: Path, where: str) -> Image.Image:
    """The first frame of a DICOM file as 8-bit RGB (modality LUT, VOI LUT/window, MONOCHROME1 inverted)."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise InputError(f"{where}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001 - pydicom raises several types for a malformed file
        raise InputError(f"{where}: not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        raise InputError(f"{where}: DICOM file holds no pixel data")
    _check_size(int(ds.get("Columns", 0)), int(ds.get("Rows", 0)), where)
    logger = logging.getLogger("pydicom")
    level = logger.level
    # pydicom logs each failed plugin with its traceback before raising; the error below says it in one line
    logger.setLevel(logging.CRITICAL)
    try:
        pixels = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - a missing decoder plugin or corrupt compressed data
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        raise InputError(
            f"{where}: cannot decode DICOM pixel data (transfer syntax {name}; install a pydicom pixel-data "
            f"plugin for it, e.g. pylibjpeg[all] or python-gdcm): {type(e).__name__}: {' '.join(str(e).split())}"
        ) from None
    finally:
        logger.setLevel(level)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        # pydicom has already converted YBR to RGB; colour images are shown as they are, 8-bit scaled
        rgb = pixels if pixels.dtype == np.uint8 else to_uint8(pixels)
        return Image.fromarray(rgb, mode="RGB")
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds, index=0)
    if photometric == "MONOCHROME1":
        values = -np.asarray(values, dtype=np.float64)  # low values are white: flip before scaling
    return Image.fromarray(to_uint8(values), mode="L").convert("RGB")


def read_image(path: str | os.PathLike, where: str = "") -> Image.Image:
    """An 8-bit RGB PIL image from a PNG/JPG/TIFF/DICOM file; any problem is one InputError naming it."""
    path = Path(path)
    where = f"{where}: {path}" if where else str(path)
    if not path.is_file():
        raise InputError(f"{where}: image not found")
    if is_dicom(path):
        return read_dicom(path, where)
    try:
        return read_pil(path, where)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{where}: cannot read image ({type(e).__name__}: {e})") from None


def image_problem(path: str | os.PathLike, quick: bool = False) -> str | None:
    """None when read_image can decode the file, else the one-line reason (for pre-flight checks).

    quick: a PNG/JPG is only checked by PIL's verify() (header and structure, no pixel decode), which a
    pre-flight over hundreds of thousands of MIMIC-sized JPGs can afford; a DICOM is always decoded.
    """
    try:
        if quick and not is_dicom(path):
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    _check_size(*image.size, str(path))
                    image.verify()
        else:
            read_image(path)
    except InputError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, zlib) for bad files
        return f"{path}: cannot read image ({type(e).__name__}: {' '.join(str(e).split())})"
    return None
