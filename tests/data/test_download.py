"""data/download.py: laying out the Kaggle dataset from kagglehub, a folder or a zip, and verifying it."""

from __future__ import annotations

import io
import sys
import zipfile

import pandas as pd
import pytest
from PIL import Image

from rrg.data.download import verify
from rrg.data.download_command import main as download

SAMPLE_UIDS = (1, 2, 4, 5)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), color=128).save(buffer, "PNG")
    return buffer.getvalue()


def make_sample(iu_xray_dir, root, image_folder: str = "images/images_normalized"):
    """A Kaggle-shaped sample: the real CSV rows of a few studies and a small PNG per listed image."""
    images = root / image_folder
    images.mkdir(parents=True)
    reports = pd.read_csv(iu_xray_dir / "indiana_reports.csv")
    projections = pd.read_csv(iu_xray_dir / "indiana_projections.csv")
    reports[reports["uid"].isin(SAMPLE_UIDS)].to_csv(root / "indiana_reports.csv", index=False)
    listed = projections[projections["uid"].isin(SAMPLE_UIDS)]
    listed.to_csv(root / "indiana_projections.csv", index=False)
    for name in listed["filename"]:
        (images / name).write_bytes(png_bytes())
    return root, list(listed["filename"])


def laid_out(out, names) -> bool:
    return (
        (out / "indiana_reports.csv").is_file()
        and (out / "indiana_projections.csv").is_file()
        and all((out / "images" / "images_normalized" / n).is_file() for n in names)
    )


def test_from_dir_accepts_a_sample_and_is_idempotent(iu_xray_dir, tmp_path, capsys):
    source, names = make_sample(iu_xray_dir, tmp_path / "manual" / "nested")
    out = tmp_path / "iu_xray"
    argv = ["--from-dir", str(tmp_path / "manual"), "--out", str(out), "--no-count-check"]
    assert download(argv) == 0
    assert laid_out(out, names)
    assert "OK" in capsys.readouterr().out
    assert download(argv) == 0
    assert "0 new file(s)" in capsys.readouterr().out
    assert (source / "images" / "images_normalized" / names[0]).is_file()  # the source is not moved


def test_count_check_fails_a_sample_unless_turned_off(iu_xray_dir, tmp_path):
    make_sample(iu_xray_dir, tmp_path / "manual")
    out = tmp_path / "iu_xray"
    assert download(["--from-dir", str(tmp_path / "manual"), "--out", str(out)]) == 1
    assert "expected 3851" in (out / "verify_problems.txt").read_text()


def test_missing_image_is_an_error(iu_xray_dir, tmp_path, capsys):
    source, names = make_sample(iu_xray_dir, tmp_path / "manual")
    (source / "images" / "images_normalized" / names[1]).unlink()
    out = tmp_path / "iu_xray"
    assert download(["--from-dir", str(source), "--out", str(out), "--no-count-check"]) == 1
    captured = capsys.readouterr()
    assert f"missing images (1):\n  {names[1]}" in captured.out and "FAILED" in captured.out
    assert names[1] in (out / "verify_problems.txt").read_text()


@pytest.mark.parametrize("damage", ["truncated", "not_png"])
def test_corrupt_png_is_an_error(iu_xray_dir, tmp_path, damage):
    source, names = make_sample(iu_xray_dir, tmp_path / "manual")
    bad = source / "images" / "images_normalized" / names[0]
    bad.write_bytes(png_bytes()[:-30] if damage == "truncated" else b"<html>error</html>")
    out = tmp_path / "iu_xray"
    assert download(["--from-dir", str(source), "--out", str(out), "--no-count-check"]) == 1
    result = verify(out, check_counts=False)
    assert [u.split(" ")[0] for u in result.undecodable] == [names[0]] and not result.missing
    if damage == "not_png":  # the header check alone catches this one
        assert not verify(out, check_counts=False, quick=True).ok


def test_from_zip(iu_xray_dir, tmp_path):
    source, names = make_sample(iu_xray_dir, tmp_path / "manual")
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in source.rglob("*"):
            if path.is_file():
                zf.write(path, "archive/" + str(path.relative_to(source)))
    out = tmp_path / "iu_xray"
    assert download(["--from-zip", str(archive), "--out", str(out), "--no-count-check"]) == 0
    assert laid_out(out, names)


def test_from_dir_without_csv_names_what_is_missing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        download(["--from-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    assert "no indiana_reports.csv or indiana_projections.csv" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "cache_layout",
    ["versions/2", "versions/2/flat", "versions/3/extra/nesting"],
    ids=["kaggle", "flat", "nested"],
)
def test_kagglehub_cache_is_laid_out_whatever_its_layout(iu_xray_dir, tmp_path, monkeypatch, cache_layout):
    import kagglehub

    cache = tmp_path / "cache" / "datasets" / "raddar" / "chest-xrays-indiana-university"
    folder = "." if cache_layout.endswith("flat") else "images/images_normalized"
    source, names = make_sample(iu_xray_dir, cache / cache_layout, image_folder=folder)
    calls = []
    monkeypatch.setattr(
        kagglehub, "dataset_download", lambda handle, *a, **k: calls.append(handle) or str(cache)
    )
    out = tmp_path / "data" / "iu_xray"
    assert download(["--out", str(out), "--no-count-check"]) == 0
    assert calls == ["raddar/chest-xrays-indiana-university"]
    assert laid_out(out, names)
    assert (source / folder / names[0]).is_file()  # the cache is left in place


@pytest.mark.parametrize(
    "error",
    [ConnectionError("Max retries exceeded\nwith url"), PermissionError("401 Unauthorized: no credentials")],
    ids=["offline", "no_credentials"],
)
def test_kagglehub_failure_is_one_line_with_manual_instructions(tmp_path, monkeypatch, capsys, error):
    import kagglehub

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(kagglehub, "dataset_download", fail)
    with pytest.raises(SystemExit) as exit_info:
        download(["--out", str(tmp_path / "iu_xray")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--from-dir" in err and "kaggle.com/datasets/raddar/chest-xrays-indiana-university" in err


def test_kagglehub_not_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import kagglehub -> ImportError
    with pytest.raises(SystemExit):
        download(["--out", str(tmp_path / "iu_xray")])
    assert "--from-zip" in capsys.readouterr().err


def test_undecodable_png_message_keeps_the_file_name_whole(tmp_path):
    """PIL's message repeats the image's whole path; it was cut at 80 characters, mid-path."""
    from rrg.data.download import PNG_SIGNATURE, check_png

    folder = tmp_path / "a-long-folder-name-for-the-dataset" / "images" / "images_normalized"
    folder.mkdir(parents=True)
    image = folder / "1234_IM-0001-4001.dcm.png"
    image.write_bytes(PNG_SIGNATURE + bytes(40))
    assert (
        check_png(image, quick=True)
        == "UnidentifiedImageError: cannot identify image file '1234_IM-0001-4001.dcm.png'"
    )
