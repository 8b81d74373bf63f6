"""Paired significance between runs (rrg.score.significance, eval/compare.py) on hand-built runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rrg.io import InputError
from rrg.score.card import score_records
from rrg.score.significance import Run, check_same_studies, compare_runs, read_run

FINDINGS = [
    "The heart is enlarged.", "Small left pleural effusion.", "No pneumothorax.", "Lungs are clear.",
    "Mild pulmonary edema.", "Right lower lobe consolidation.", "Degenerative changes of the spine.",
    "Calcified granuloma in the left upper lobe.", "Stable mediastinal contours.", "Low lung volumes.",
]  # fmt: skip


def _reference(i: int) -> str:
    rng = np.random.default_rng(i)
    picked = [FINDINGS[j] for j in rng.choice(len(FINDINGS), size=3, replace=False)]
    return f"Findings: {' '.join(picked)} Impression: {picked[0]}"


def _run(name: str, predict, n: int = 40) -> Run:
    studies = [str(i) for i in range(n)]
    refs = {s: [_reference(int(s))] for s in studies}
    return Run(name, f"{name}.jsonl", studies, {s: predict(int(s), refs[s][0]) for s in studies}, refs)


def _bad(i: int, ref: str) -> str:
    return "Findings: Normal chest radiograph. Impression: No acute disease."


def _good(i: int, ref: str) -> str:
    return ref


def _half(i: int, ref: str) -> str:  # the reference's first sentence only
    findings = ref.split("Findings: ")[1].split(" Impression: ")[0]
    return f"Findings: {findings.split('. ')[0]}. Impression: {ref.split('Impression: ')[1]}"


@pytest.mark.slow
def test_identical_runs_give_p_one_and_a_zero_interval():
    result = compare_runs(
        [_run("a", _half), _run("b", _half)], bootstrap=200, permutations=200, labeler="offline", meteor=True
    )
    metrics = result["comparisons"][0]["metrics"]
    assert "report METEOR" in metrics and "F1-14 micro, CheXpert rules (offline)" in metrics
    assert "ReXrank BLEU-2" in metrics and "F1 micro without No Finding, CheXpert rules (offline)" in metrics
    for name, m in metrics.items():
        assert m["p_value"] == 1.0, name
        assert m["difference"] == pytest.approx(0.0, abs=1e-12), name
        assert m["ci95"] == pytest.approx([0.0, 0.0], abs=1e-12), name


def test_a_run_better_on_every_study_is_significant():
    result = compare_runs(
        [_run("bad", _bad), _run("good", _good)],
        bootstrap=200,
        permutations=500,
        labeler="none",
        meteor=False,
    )
    metrics = result["comparisons"][0]["metrics"]
    for name in ("report BLEU-4", "report ROUGE-L", "report CIDEr", "findings BLEU-1", "ReXrank BLEU-2"):
        m = metrics[name]
        assert m["difference"] > 0 and m["ci95"][0] > 0, name
        assert m["p_value"] < 0.01, name


@pytest.fixture(scope="module")
def meteor():
    from rrg.score.meteor import MeteorScorer

    with MeteorScorer() as scorer:
        yield scorer


@pytest.mark.slow
def test_point_values_are_the_score_cards(meteor):
    runs = [_run("bad", _bad), _run("half", _half)]
    result = compare_runs(runs, bootstrap=20, permutations=20, labeler="offline", meteor=True)
    metrics = result["comparisons"][0]["metrics"]
    for run, key in ((runs[0], "baseline"), (runs[1], "system")):
        records = [
            {"id": s, "prediction": run.predictions[s], "reference": run.references[s]} for s in run.studies
        ]
        card = score_records(records, labeler="offline", meteor=meteor)
        for section in ("report", "findings", "impression"):
            for metric, value in card["metrics"][section].items():
                assert metrics[f"{section} {metric}"][key] == pytest.approx(value, abs=1e-9), (
                    section,
                    metric,
                )
        assert metrics["ReXrank BLEU-2"][key] == pytest.approx(card["rexrank_bleu"]["bleu2"], abs=1e-12)
        clinical = card["clinical"]["summary"]
        assert metrics["F1-14 micro, CheXpert rules (offline)"][key] == pytest.approx(clinical["f1_micro_14"])
        assert metrics["F1 micro without No Finding, CheXpert rules (offline)"][key] == pytest.approx(
            clinical["f1_micro_13"]
        )


def test_different_study_sets_are_refused_naming_the_ids():
    a, b = _run("a", _bad, n=5), _run("b", _bad, n=5)
    b.studies.remove("3")
    del b.predictions["3"]
    b.studies.append("9")
    b.predictions["9"] = "x"
    b.references["9"] = ["y"]
    with pytest.raises(InputError, match=r"1 missing \['3'\], 1 extra \['9'\]"):
        check_same_studies([a, b])
    c = _run("c", _bad, n=5)
    c.references["2"] = ["another reference"]
    with pytest.raises(InputError, match=r"other references .*\['2'\]"):
        check_same_studies([a, c])


def _write(path, run: Run) -> None:
    lines = [
        {"id": s, "study_id": s, "prediction": run.predictions[s], "reference": run.references[s][0]}
        for s in run.studies
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_command_writes_json_markdown_and_figure(tmp_path, capsys):
    from rrg.score.compare import main

    _write(tmp_path / "bad" / "predictions.jsonl", _run("bad", _bad))
    _write(tmp_path / "good.jsonl", _run("good", _good))
    _write(tmp_path / "half.jsonl", _run("half", _half))
    out = tmp_path / "cmp"
    argv = ["--runs", str(tmp_path / "bad"), str(tmp_path / "good.jsonl"), f"mine={tmp_path / 'half.jsonl'}"]
    argv += [
        "--out",
        str(out),
        "--bootstrap",
        "50",
        "--permutations",
        "50",
        "--no_meteor",
        "--labeler",
        "none",
    ]
    result = main(argv)
    assert result["baseline"] == "bad" and [c["system"] for c in result["comparisons"]] == ["good", "mine"]
    assert json.loads((out / "compare.json").read_text())["studies"] == 40
    assert "| report BLEU-4 |" in (out / "compare.md").read_text()
    assert (out / "compare.png").stat().st_size > 10_000
    with pytest.raises(SystemExit):
        main(argv)  # the outputs exist
    assert "pass --overwrite" in capsys.readouterr().err


def test_read_run_names_and_first_line_per_study(tmp_path):
    path = tmp_path / "r" / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text(
        json.dumps({"id": "1_0", "study_id": "1", "prediction": "a", "reference": "r"})
        + "\n"
        + json.dumps({"id": "1_1", "study_id": "1", "prediction": "b", "reference": "r"})
        + "\n"
    )
    run = read_run(str(path.parent))
    assert run.name == "r" and run.studies == ["1"] and run.predictions == {"1": "a"}
