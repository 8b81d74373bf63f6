"""eval under two gloo processes (as torchrun / accelerate launch start it) on a folder another run holds:
every rank leaves with status 1, the main one with the one-line refusal, none with a RuntimeError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp
from PIL import Image

from rrg.lock import output_lock
from tests.helpers import free_port, join_process_group


def write_split(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(folder / "images" / "1_IM-1.png")
    record = {"id": "1", "study_id": "1", "images": ["1_IM-1.png"], "prompt": "Write.", "response": "Clear."}
    path = folder / "test.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return path


def worker(rank: int, world: int, port: int, folder: str) -> None:
    join_process_group(rank, world, port)
    from rrg.generate.run import main

    folder = Path(folder)
    args = ["--json_file", str(folder / "test.jsonl"), "--image_dir", str(folder / "images")]
    outcome: dict = {}
    try:
        main([*args, "--out", str(folder / "locked" / "predictions.jsonl"), "--no_score", "--model_path", "x"])
        outcome = {"code": 0}
    except SystemExit as e:
        outcome = {"code": e.code}
    except Exception as e:  # noqa: BLE001 - what the test looks for
        outcome = {"error": type(e).__name__, "message": str(e)[:300]}
    (folder / f"rank{rank}.json").write_text(json.dumps(outcome))


@pytest.mark.slow
def test_a_locked_folder_stops_every_rank_with_status_1(tmp_path, capfd):
    write_split(tmp_path)
    with output_lock(tmp_path / "locked"):
        mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    outcomes = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert outcomes == [{"code": 1}, {"code": 1}]
    err = capfd.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1, err[-2000:]
