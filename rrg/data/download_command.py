"""Download IU X-Ray (Kaggle raddar/chest-xrays-indiana-university) into data/iu_xray/ and verify it.

    python data/download.py                        # kagglehub (needs Kaggle access)
    python data/download.py --from-zip archive.zip # a zip downloaded by hand from the Kaggle page
    python data/download.py --from-dir FOLDER      # an unzipped copy

Layout: <out>/indiana_reports.csv, <out>/indiana_projections.csv, <out>/images/images_normalized/*.png.
Exit status 1 (with the list) when an image is missing or undecodable, or the counts are not the full
dataset's (3,851 reports, 7,466 projection rows; --no-count-check makes that a warning, for samples).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.download import format_summary, kaggle_download, lay_out_from_dir, lay_out_from_zip, verify
from rrg.io import InputError, atomic_write_text


@dataclass
class DownloadConfig:
    out: str = flag("data/iu_xray", "Where the dataset is laid out.", nonempty=True)
    from_dir: str | None = flag(None, "Use a dataset folder downloaded by hand.")
    from_zip: str | None = flag(None, "Use the Kaggle zip downloaded by hand.")
    no_count_check: bool = flag(False, "Differing report/projection counts warn instead of failing (samples).")
    quick_verify: bool = flag(False, "Check PNG headers only, no full decode.")
    no_verify: bool = flag(False, "Lay files out without verifying them.")
    workers: int = flag(8, "Threads decoding PNGs.", ge=1)


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    config = parse_flags(DownloadConfig, argv, description=__doc__)
    if config.from_dir and config.from_zip:
        raise InputError("pass only one of --from-dir and --from-zip")
    out = Path(config.out)
    if config.from_zip:
        new = lay_out_from_zip(config.from_zip, out)
    else:
        source = Path(config.from_dir) if config.from_dir else kaggle_download(out)
        new = lay_out_from_dir(source, out)
    print(f"{out}: {new} new file(s) laid out")
    if out == Path(DownloadConfig.out) and not Path("data/images").exists():
        # The reference paper's commands pass --image_dir data/images: make that name work too.
        Path("data/images").symlink_to("iu_xray/images", target_is_directory=True)
        print("data/images -> data/iu_xray/images (the reference paper's --image_dir)")
    if config.no_verify:
        return 0
    result = verify(
        out, check_counts=not config.no_count_check, quick=config.quick_verify, workers=config.workers
    )
    print(format_summary(result, out))
    if result.ok:
        return 0
    problems = out / "verify_problems.txt"
    atomic_write_text(problems, "\n".join(result.count_problems + result.missing + result.undecodable) + "\n")
    print(f"error: {out} is incomplete; the full list is in {problems}", file=sys.stderr)
    return 1
