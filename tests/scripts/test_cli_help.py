"""Every script answers --help: exit 0 and a usage line, on a machine without a GPU.

Each script runs as __main__ in a child of one process that imported torch and transformers once
(tests/helpers.py), so the check costs one import of those, not one per script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    str(path.relative_to(REPO))
    for folder in ("data", "eval", "plot", "scripts")
    for path in (REPO / folder).glob("*.py")
) + ["train_lora.py"]


@pytest.fixture(scope="module")
def helps() -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = REPO / "tests" / "helpers.py"
    result = subprocess.run(
        [sys.executable, str(driver), *SCRIPTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_every_script_folder_is_covered():
    assert {s.split("/")[0] for s in SCRIPTS} == {"data", "eval", "plot", "scripts", "train_lora.py"}
    assert len(SCRIPTS) >= 15


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_answers_help(helps, script):
    result = helps[script]
    assert result["code"] == 0, result["stderr"][-2000:]
    assert result["stdout"].startswith("usage:"), result["stdout"][:500]
    assert "Traceback" not in result["stderr"]
