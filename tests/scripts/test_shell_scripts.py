"""scripts/*.sh: each answers --help with its usage, and none deletes a folder it did not make.

The folders handed to the scripts here hold a file of their own (or are tracked by git); after each
run that file must still be there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHELL_SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.sh"))


def bash(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def foreign_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "keep.txt").write_text("not the script's\n")
    return folder


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_shell_script_answers_help(script, flag):
    result = bash(f"scripts/{script}", flag)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout or "usage" in result.stdout, result.stdout
    assert not (REPO / flag).exists()


def test_smoke_refuses_a_folder_it_did_not_make(tmp_path):
    folder = foreign_folder(tmp_path, "mine")
    result = bash("scripts/smoke.sh", str(folder))
    assert result.returncode == 1 and "not made by this script" in result.stderr
    assert (folder / "keep.txt").is_file()


@pytest.mark.slow
def test_smoke_refuses_a_tracked_folder():
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True)
    if not tracked.stdout.strip():
        pytest.skip("no tracked results/ in this checkout")
    result = bash("scripts/smoke.sh", "results")
    assert result.returncode == 1 and "tracked by git" in result.stderr
    assert all((REPO / name).is_file() for name in tracked.stdout.split())


def kaggle_csvs_without_rows(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "indiana_reports.csv").write_text("uid,MeSH,Problems,image,indication,comparison,findings,impression\n")
    (data / "indiana_projections.csv").write_text("uid,filename,projection\n")
    return data


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="baselines.sh checks for java first")
def test_baselines_keeps_foreign_work_and_out_folders(tmp_path):
    data = kaggle_csvs_without_rows(tmp_path)
    work = foreign_folder(tmp_path, "work")
    result = bash("scripts/baselines.sh", env={"DATA": str(data), "WORK": str(work), "OUT": str(tmp_path / "o")})
    assert result.returncode == 1 and "not made by this script" in result.stderr, result.stderr
    assert (work / "keep.txt").is_file()

    out = foreign_folder(tmp_path, "out")  # results/baselines by default: written in place, never deleted
    result = bash("scripts/baselines.sh", env={"DATA": str(data), "WORK": str(tmp_path / "w"), "OUT": str(out)})
    assert result.returncode != 0  # the CSVs have no rows: report2json stops it
    assert (out / "keep.txt").is_file()
    assert "r2gen protocol is skipped" in result.stderr  # no annotation.json in a Kaggle download
