"""plot/browse.py finds the card under either name and its --help examples parse."""

from __future__ import annotations

import shlex

from rrg.report import browse
from rrg.report.cases import load_run
from tests.helpers import LORA, write_run


def test_the_score_py_card_name_is_found(tmp_path):
    folder = write_run(tmp_path / "lora", LORA)
    (folder / "scores.json").rename(folder / "predictions.scores.json")  # eval/score.py's default --out
    run = load_run(folder)
    assert run.card is not None and "metrics" in run.card


def test_the_eval_runs_card_wins_when_both_are_there(tmp_path):
    folder = write_run(tmp_path / "lora", LORA)
    (folder / "predictions.scores.json").write_text('{"metrics": {}, "which": "score.py"}')
    assert "which" not in load_run(folder).card


def _examples() -> list[list[str]]:
    text = browse.__doc__.replace("\\\n", " ")
    return [shlex.split(line.split("#")[0])[2:] for line in text.splitlines() if "python plot/browse.py" in line]


def test_help_examples_parse_and_the_two_run_example_compares_two_runs():
    examples = _examples()
    assert len(examples) == 2
    parsed = [browse.parse_args(args) for args in examples]
    assert parsed[1].results == "results/lora" and parsed[1].compare == ["results/zero_shot"]
