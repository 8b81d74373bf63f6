"""Get IU X-Ray (Kaggle "raddar/chest-xrays-indiana-university") into one fixed layout, and verify it.

    <out>/indiana_reports.csv
    <out>/indiana_projections.csv
    <out>/images/images_normalized/*.png

The source is kagglehub's cache, a folder or a zip the user downloaded by hand; whatever their layout,
files are found by name and hard-linked (or copied across file systems) into place. The cache is never
moved, and a file already in place with the same size is left alone, so re-running is cheap.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from rrg.data.iu_xray import IMAGE_SUBDIR, read_projections, read_reports
from rrg.io import InputError

KAGGLE_HANDLE = "raddar/chest-xrays-indiana-university"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_HANDLE}"
CSV_NAMES = ("indiana_reports.csv", "indiana_projections.csv")
EXPECTED_REPORTS = 3851
EXPECTED_PROJECTIONS = 7466
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def manual_download_hint(out: str | os.PathLike) -> str:
    return (
        f"download the dataset by hand from {KAGGLE_URL} (Download -> archive.zip) and run "
        f"`python data/download.py --from-zip archive.zip --out {out}` "
        "(or unzip it and pass --from-dir FOLDER)"
    )


def kaggle_download(out: str | os.PathLike) -> Path:
    """Download (or reuse) the dataset in kagglehub's cache; any failure becomes a one-line InputError."""
    try:
        import kagglehub
    except ImportError:
        raise InputError(
            f"kagglehub is not installed (pip install kagglehub); or {manual_download_hint(out)}"
        ) from None
    try:
        return Path(kagglehub.dataset_download(KAGGLE_HANDLE))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # offline, no/invalid credentials, API errors: all end the same way for the user
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise InputError(
            f"kagglehub could not download {KAGGLE_HANDLE} ({type(e).__name__}: {reason}); "
            f"{manual_download_hint(out)}"
        ) from None


# ---------------------------------------------------------------- laying files out


def locate_files(source: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Find the two CSVs and every PNG under source, whatever the folder nesting: ({csv name: path}, {png name: path})."""
    csvs: dict[str, Path] = {}
    pngs: dict[str, Path] = {}
    for root, _, names in os.walk(source):
        for name in names:
            path = Path(root) / name
            if name in CSV_NAMES:
                csvs.setdefault(name, path)
            elif name.lower().endswith(".png"):
                pngs.setdefault(name, path)
    return csvs, pngs


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link src to dst (copy when linking is impossible); False when dst already holds it."""
    if dst.exists():
        if dst.samefile(src) or dst.stat().st_size == src.stat().st_size:
            return False
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # atomic: a killed run never leaves a half-copied image under its real name
    return True


def lay_out_from_dir(source: str | os.PathLike, out: str | os.PathLike) -> int:
    """Link/copy the CSVs and PNGs found under source into out's layout; returns the number of new files."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise InputError(f"{source}: folder not found")
    csvs, pngs = locate_files(source)
    missing = [name for name in CSV_NAMES if name not in csvs]
    if missing:
        raise InputError(f"{source}: no {' or '.join(missing)} found in this folder or below")
    image_dir = out / IMAGE_SUBDIR
    jobs = [(path, out / name) for name, path in csvs.items()]
    jobs += [(path, image_dir / name) for name, path in sorted(pngs.items())]
    new = 0
    for src, dst in tqdm(jobs, desc=f"laying out {out}", unit="file", mininterval=1):
        new += link_or_copy(src, dst)
    return new


def lay_out_from_zip(archive: str | os.PathLike, out: str | os.PathLike) -> int:
    """Extract the CSVs and PNGs of a hand-downloaded Kaggle zip into out's layout, whatever its nesting."""
    archive, out = Path(archive), Path(out)
    if not archive.is_file():
        raise InputError(f"{archive}: file not found")
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise InputError(f"{archive}: not a zip file (or a truncated download)") from None
    with zf:
        wanted = []
        for info in zf.infolist():
            name = Path(info.filename).name
            if info.is_dir() or name.startswith("."):
                continue
            if name in CSV_NAMES:
                wanted.append((info, out / name))
            elif name.lower().endswith(".png"):
                wanted.append((info, out / IMAGE_SUBDIR / name))
        found = {Path(info.filename).name for info, _ in wanted}
        missing = [name for name in CSV_NAMES if name not in found]
        if missing:
            raise InputError(f"{archive}: no {' or '.join(missing)} in this zip")
        new = 0
        for info, dst in tqdm(wanted, desc=f"extracting {archive.name}", unit="file", mininterval=1):
            if dst.exists() and dst.stat().st_size == info.file_size:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.tmp")
            try:
                with zf.open(info) as src, open(tmp, "wb") as f:
                    shutil.copyfileobj(src, f)
            except (zipfile.BadZipFile, OSError) as e:  # CRC error, truncated archive
                tmp.unlink(missing_ok=True)
                raise InputError(f"{archive}: {info.filename}: cannot extract ({e})") from None
            os.replace(tmp, dst)
            new += 1
    return new


# ---------------------------------------------------------------- verifying


@dataclass
class VerifyResult:
    n_reports: int = 0
    n_projections: int = 0
    n_images_listed: int = 0
    n_images_in_folder: int = 0
    missing: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    count_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.undecodable or self.count_problems)


def check_png(path: Path, quick: bool) -> str | None:
    """None when the PNG is good; otherwise why not. quick: signature and header only; else a full decode."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                return "not a PNG"
        with Image.open(path) as image:
            if not quick:
                image.load()  # decodes every pixel: catches truncated and corrupt data
        return None
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, zlib errors) for bad files
        # The caller names the file; PIL's message may repeat its whole path, which is shortened to its
        # name rather than the message being cut in the middle of the path.
        return f"{type(e).__name__}: {' '.join(str(e).replace(str(path), path.name).split())}"


def verify(
    out: str | os.PathLike, *, check_counts: bool = True, quick: bool = False, workers: int = 8
) -> VerifyResult:
    """Check the laid-out dataset: CSVs readable, expected counts, every listed image present and decodable."""
    out = Path(out)
    reports = read_reports(out / "indiana_reports.csv")
    projections = read_projections(out / "indiana_projections.csv")
    image_dir = out / IMAGE_SUBDIR
    result = VerifyResult(n_reports=len(reports), n_projections=len(projections))
    for what, got, expected in (
        ("reports", len(reports), EXPECTED_REPORTS),
        ("projection rows", len(projections), EXPECTED_PROJECTIONS),
    ):
        if got != expected:
            result.count_problems.append(f"{got} {what}, expected {expected}")
    if not check_counts and result.count_problems:
        for problem in result.count_problems:
            print(f"warning: {problem} (count check off)")
        result.count_problems = []
    listed = sorted(set(projections["filename"].astype(str)))
    result.n_images_listed = len(listed)
    result.n_images_in_folder = len(list(image_dir.glob("*.png"))) if image_dir.is_dir() else 0
    present = [name for name in listed if (image_dir / name).is_file()]
    result.missing = sorted(set(listed) - set(present))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes outside the GIL
        checks = pool.map(lambda name: check_png(image_dir / name, quick), present)
        label = "checking PNG headers" if quick else "decoding PNGs"
        # The bar comes first in zip so it sees the end of its iterator and shows the final count.
        progress = tqdm(checks, total=len(present), desc=label, unit="img", mininterval=1)
        for problem, name in zip(progress, present):
            if problem:
                result.undecodable.append(f"{name} ({problem})")
    return result


def format_summary(result: VerifyResult, out: str | os.PathLike, limit: int = 20) -> str:
    lines = [
        f"{out}: {result.n_reports} reports, {result.n_projections} projection rows, "
        f"{result.n_images_listed} listed images, {result.n_images_in_folder} PNGs in {Path(out) / IMAGE_SUBDIR}"
    ]
    for title, items in (
        ("count mismatch", result.count_problems),
        ("missing images", result.missing),
        ("undecodable images", result.undecodable),
    ):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  {item}" for item in items[:limit]]
            if len(items) > limit:
                lines.append(f"  ... and {len(items) - limit} more")
    lines.append("OK" if result.ok else "FAILED")
    return "\n".join(lines)
