"""eval/score.py holds the eval run's output lock: a second scoring into the same place is refused."""

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from rrg.lock import output_lock

SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "score.py"


def _hold(folder: str, ready, release) -> None:
    with output_lock(folder):
        ready.set()
        release.wait(60)


def _import_score():
    from rrg.score import command as score
    return score


@pytest.mark.slow
def test_a_second_scoring_into_a_held_card_folder_is_refused(tmp_path, capsys):
    score = _import_score()
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "1", "prediction": "no effusion", "reference": "no effusion"}) + "\n")
    cards = tmp_path / "cards"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(cards), ready, release))  # the other scoring, mid-run
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(SystemExit) as exit_info:
            score.main([str(preds), "--out", str(cards / "card.json"), "--labeler", "none"])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err and str(cards) in err
        assert not (cards / "card.json").exists()
    finally:
        release.set()
        holder.join(60)
