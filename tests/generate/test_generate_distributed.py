"""Generation split over processes (rrg.generate.shards, rrg.generate.run under two gloo processes on CPU): one
predictions file with every id once, in entry order, the same text as one process; a killed run resumes
under two processes or one; only rank 0 scores."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from rrg.generate.shards import merge_parts, part_path, part_paths
from rrg.io import read_jsonl
from tests.helpers import free_port, join_process_group

IDS = ["10", "11", "12", "13", "14"]
FILES = ("predictions.jsonl", "predictions.shuffle.jsonl")  # the real images, and another study's


def write_split(folder: Path) -> Path:
    """5 entries of 5 studies, one with two views; tiny PNGs of different sizes."""
    records = []
    for k, study in enumerate(IDS):
        names = []
        for view in range(2 if study == "11" else 1):
            pixels = np.random.default_rng(10 * k + view).integers(
                0, 256, (48, 40 + 8 * k, 3), dtype=np.uint8
            )
            (folder / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / "images" / f"{study}_IM-{view}.png")
            names.append(f"{study}_IM-{view}.png")
        records.append(
            {
                "id": study, "study_id": study, "images": names, "prompt": "Write the report." + " Cough." * k,
                "response": f"Findings: clear {k}. Impression: normal {k}.",
            }
        )  # fmt: skip
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def eval_args(folder: Path, model_dir: str, out: Path, *extra: str) -> list[str]:
    return [
        "--json_file", str(folder / "test.jsonl"), "--image_dir", str(folder / "images"),
        "--model_path", model_dir, "--out", str(out), "--max_new_tokens", "5", "--batch_size", "3",
        "--num_workers", "0", "--image_control", "shuffle", *extra,
    ]  # fmt: skip


def stand_ins(monkeypatch: pytest.MonkeyPatch, log: Path, rank: int) -> None:
    """A scorer without a JVM, and a spy on generation; both record this rank's calls in `log`."""
    import rrg.generate.batch
    import rrg.generate.run
    import rrg.score.card
    import rrg.score.meteor

    def score_records(records, **kwargs):
        with open(log, "a") as f:
            f.write(json.dumps({"rank": rank, "scored": kwargs["source"]}) + "\n")
        return {"metrics": {"report": {"BLEU-1": 0.5}}, "counts": {"lines": len(records)}}

    real = rrg.generate.batch.generate_predictions  # not a spy set up before

    def generate_predictions(model, processor, items, paths, out, identity, *args, **kwargs):
        with open(log, "a") as f:
            ids = [entry.id for entry, _ in items]
            f.write(json.dumps({"rank": rank, "control": identity["image_control"], "ids": ids}) + "\n")
        return real(model, processor, items, paths, out, identity, *args, **kwargs)

    monkeypatch.setattr(rrg.score.card, "score_records", score_records)
    monkeypatch.setattr(rrg.score.card, "format_card", lambda card: "card")
    monkeypatch.setattr(rrg.score.meteor, "MeteorScorer", contextlib.nullcontext)
    monkeypatch.setattr(rrg.generate.run, "generate_predictions", generate_predictions)


def worker(rank: int, world: int, port: int, model_dir: str, folder: str) -> None:
    join_process_group(rank, world, port)
    from rrg.generate.run import main

    folder = Path(folder)
    with pytest.MonkeyPatch.context() as monkeypatch:
        stand_ins(monkeypatch, folder / "two" / "calls.jsonl", rank)
        card = main(eval_args(folder, model_dir, folder / "two" / "predictions.jsonl"))
        (folder / "two" / f"card-{rank}.json").write_text(json.dumps(card))
        stand_ins(monkeypatch, folder / "resume2" / "calls.jsonl", rank)
        main(eval_args(folder, model_dir, folder / "resume2" / "predictions.jsonl", "--resume"))


def kept(record: dict) -> dict:
    """A line of the killed run, marked so that a line generated again would show."""
    return {**record, "prediction": "kept: " + record["prediction"]}


def write_lines(path: Path, records: list[dict], partial: dict | None = None) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if partial:  # half a line, as a writer killed mid-write leaves it
        line = json.dumps(partial)
        text += line[: len(line) // 2]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def killed_run(folder: Path, one: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The files a run killed with 4 processes leaves (lines in the main file and in parts 1 and 3, half a
    line, a line in both the main file and a part); returns the expected complete files after resuming."""
    real, shuffle = (list(one[name]) for name in FILES)
    write_lines(folder / FILES[0], [kept(real[0])])
    write_lines(part_path(folder / FILES[0], 1), [kept(real[2])], partial=real[3])
    write_lines(part_path(folder / FILES[0], 3), [kept(real[4]), kept(real[0])])
    write_lines(part_path(folder / FILES[1], 0), [kept(shuffle[1])])
    for i in (0, 2, 4):
        real[i] = kept(real[i])
    shuffle[1] = kept(shuffle[1])
    return {FILES[0]: real, FILES[1]: shuffle}


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory) -> dict:
    """One process (in this process), two processes (spawned; a fresh run, then resuming a killed one),
    and one process resuming the same killed run. Scoring is a stand-in: these tests are about files."""
    from rrg.generate.run import main

    folder = tmp_path_factory.mktemp("sharded")
    write_split(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: the same arithmetic, so the same greedy text
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            stand_ins(monkeypatch, folder / "one" / "calls.jsonl", 0)
            main(eval_args(folder, str(tiny_model_dir), folder / "one" / "predictions.jsonl"))
            one = {name: read_jsonl(folder / "one" / name) for name in FILES}
            expected = killed_run(folder / "resume2", one)
            killed_run(folder / "resume1", one)

            port = free_port()
            mp.spawn(worker, args=(2, port, str(tiny_model_dir), str(folder)), nprocs=2, join=True)

            stand_ins(monkeypatch, folder / "resume1" / "calls.jsonl", 0)
            main(eval_args(folder, str(tiny_model_dir), folder / "resume1" / "predictions.jsonl", "--resume"))
    finally:
        torch.set_num_threads(threads)
    return {"folder": folder, "one": one, "expected_after_resume": expected}


def calls(folder: Path) -> list[dict]:
    return read_jsonl(folder / "calls.jsonl")


@pytest.mark.slow
def test_two_processes_write_one_file_like_one_process(runs):
    folder, one = runs["folder"], runs["one"]
    for name in FILES:
        lines = read_jsonl(folder / "two" / name)
        assert [r["id"] for r in lines] == IDS  # every id once, in entry order
        assert lines == one[name]  # the same greedy text and fields as one process
    assert len({r["prediction"] for r in one[FILES[0]]}) > 1  # the tiny model's texts tell entries apart
    assert not list((folder / "two").glob("*.jsonl.rank*"))  # the parts were merged and removed
    # Each process generated a disjoint share, together all 10 reports (5 real, 5 shuffled).
    shares = [c for c in calls(folder / "two") if "ids" in c]
    assert {c["rank"] for c in shares} == {0, 1}
    made = [(c["control"], i) for c in shares for i in c["ids"]]
    assert sorted(made) == sorted((control, i) for control in ("none", "shuffle") for i in IDS)


@pytest.mark.slow
def test_only_rank_0_scores_and_returns_the_card(runs):
    two = runs["folder"] / "two"
    scored = [c for c in calls(two) if "scored" in c]
    assert {c["rank"] for c in scored} == {0}
    assert sorted(Path(c["scored"]).name for c in scored) == sorted(FILES)
    card = json.loads((two / "scores.json").read_text())
    assert card["image_control"]["condition"] == "shuffle"
    assert json.loads((two / "card-0.json").read_text()) == card
    assert json.loads((two / "card-1.json").read_text()) == {}


@pytest.mark.slow
@pytest.mark.parametrize("run", ["resume2", "resume1"])
def test_a_run_killed_on_four_processes_resumes_on_two_or_one(runs, run):
    folder = runs["folder"] / run
    for name in FILES:
        # Complete, in entry order, each id once; the killed run's lines kept, not generated again.
        assert read_jsonl(folder / name) == runs["expected_after_resume"][name]
    assert not list(folder.glob("*.jsonl.rank*"))
    made = sorted((c["control"], i) for c in calls(folder) if "ids" in c for i in c["ids"])
    assert made == [("none", "11"), ("none", "13")] + [("shuffle", i) for i in IDS if i != "11"]
    assert (folder / "scores.json").is_file()


def test_merge_orders_by_entry_and_keeps_each_id_once(tmp_path, capsys):
    path = tmp_path / "predictions.jsonl"
    write_lines(path, [{"id": "c", "p": 1}, {"id": "x", "p": 1}])
    write_lines(part_path(path, 0), [{"id": "b", "p": 2}, {"id": "c", "p": 2}])
    write_lines(part_path(path, 7), [{"id": "a", "p": 3}])
    (tmp_path / "predictions.jsonl.rank1.tmp").write_text("not a part\n")
    assert part_paths(path) == [part_path(path, 0), part_path(path, 7)]
    merge_parts(path, ["a", "b", "c"])
    # Entry order; an id outside this run's entries (an earlier, longer run) after them; the first line wins.
    assert read_jsonl(path) == [
        {"id": "a", "p": 3},
        {"id": "b", "p": 2},
        {"id": "c", "p": 1},
        {"id": "x", "p": 1},
    ]
    assert part_paths(path) == [] and (tmp_path / "predictions.jsonl.rank1.tmp").exists()
    assert "1 line(s) were there twice" in capsys.readouterr().out


@pytest.mark.slow
def test_part_files_are_checked_like_the_predictions_file(tiny_model_dir, tmp_path, capsys):
    """A part file left by a killed run: refused without --resume, and a line made with other settings is
    an error naming the part and line (both before any model is loaded)."""
    from rrg.generate.run import main

    write_split(tmp_path)
    out = tmp_path / "run" / "predictions.jsonl"
    part = part_path(out, 2)
    line = {
        "id": "10", "image_control": "none", "model": str(tiny_model_dir), "adapter": None,
        "generation": {"max_new_tokens": 7, "num_beams": 1, "do_sample": False, "temperature": 1.0, "seed": 0,
                       "batch_size": 3, "cache_implementation": None},
    }  # fmt: skip
    write_lines(part, [line])
    args = eval_args(tmp_path, str(tiny_model_dir), out)[:-2]  # without the image control
    with pytest.raises(SystemExit):
        main(args)
    assert f"{part} exists and is not empty: pass --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--resume"])
    assert f"{part}:1: made with other settings" in capsys.readouterr().err
    assert part.exists() and not out.exists()  # nothing merged, nothing lost
