"""eval/score.py: bad input gives one line naming file:line and exit 1; a good file gives the card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "eval" / "score.py"

GOOD = [
    {
        "id": "7_0",
        "images": ["CXR7_IM-2263-1001.png"],
        "prediction": "Findings: Heart size normal. Lungs clear. Impression: Normal chest.",
        "reference": "Findings: The heart size is normal. The lungs are clear. Impression: No acute disease.",
    },
    {
        "id": "7_1",
        "images": ["CXR7_IM-2263-2001.png"],
        "prediction": "Findings: Cardiomegaly. Impression: Cardiomegaly.",
        "reference": "Findings: The heart size is normal. The lungs are clear. Impression: No acute disease.",
    },
    {
        "id": "1900",
        "study_id": "1900",
        "prediction": "",
        "reference": ["Findings: Mild cardiomegaly. Impression: Cardiomegaly.", "Findings: Big heart."],
    },
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_malformed_line_exits_1_naming_file_and_line(tmp_path):
    path = _write(tmp_path / "preds.jsonl", [json.dumps(GOOD[0]), '{"id": "x", "prediction": "a", '])
    result = _run(str(path), "--out", str(tmp_path / "scores.json"))
    assert result.returncode == 1
    assert f"{path}:2" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "scores.json").exists()


@pytest.mark.slow
def test_missing_field_exits_1_naming_it(tmp_path):
    path = _write(tmp_path / "preds.jsonl", [json.dumps(GOOD[0]), json.dumps({"id": "x", "prediction": "a"})])
    result = _run(str(path))
    assert result.returncode == 1
    assert f"{path}:2" in result.stderr and "'reference'" in result.stderr


@pytest.mark.slow
def test_cli_writes_the_card(tmp_path, capsys):
    from rrg.score import command as score
    path = _write(tmp_path / "preds.jsonl", [json.dumps(r) for r in GOOD])
    out = tmp_path / "card.json"
    score.main([str(path), "--out", str(out), "--bootstrap", "50", "--seed", "3"])
    card = json.loads(out.read_text())
    assert set(card) == {"metrics", "ci95", "counts", "settings", "versions", "notes", "clinical", "rexrank_bleu"}
    assert card["counts"]["scored"] == 2 and card["counts"]["duplicate_views_dropped"] == 1
    assert card["counts"]["empty_predictions"] == 1
    assert card["settings"] == {
        "normalize": True,
        "per_image": False,
        "bootstrap": 50,
        "seed": 3,
        "legacy": False,
        "predictions": str(path),
    }
    assert set(card["ci95"]["report"]["BLEU-4"]) and len(card["ci95"]["report"]["BLEU-4"]) == 2
    captured = capsys.readouterr()
    assert f"{path}:3: empty prediction" in captured.err
    assert "BLEU-4" in captured.out and "report" in captured.out


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--bootstrap=-1"])
def test_bad_flag_is_a_usage_error(tmp_path, flag):
    path = _write(tmp_path / "preds.jsonl", [json.dumps(GOOD[0])])
    result = _run(str(path), flag)
    assert result.returncode == 2 and "--bootstrap" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "error",
    [
        LookupError("Resource wordnet not found"),
        OSError("No such file or directory: '/root/nltk_data/corpora/wordnet/lexnames'"),  # a partial copy
    ],
)
def test_legacy_without_wordnet_is_one_line_with_the_install_command(tmp_path, monkeypatch, capsys, error):
    import nltk.corpus

    class NoWordNet:
        def ensure_loaded(self):
            raise error

    monkeypatch.setattr(nltk.corpus, "wordnet", NoWordNet())
    from rrg.score import command as score
    path = _write(tmp_path / "preds.jsonl", [json.dumps(GOOD[0])])
    with pytest.raises(SystemExit) as exit_info:
        score.main([str(path), "--legacy"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "python scripts/install_wordnet.py" in err


def _import_score():
    from rrg.score import command as score
    return score


@pytest.mark.slow
def test_existing_card_is_kept_unless_overwrite(tmp_path, capsys):
    score = _import_score()
    path = _write(tmp_path / "preds.jsonl", [json.dumps(r) for r in GOOD])
    for out, args in (
        (tmp_path / "card.json", ["--out", str(tmp_path / "card.json")]),
        (path.with_suffix(".scores.json"), []),
    ):
        out.write_text("an earlier card\n")
        with pytest.raises(SystemExit) as exit_info:
            score.main([str(path), *args])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out) in err and "--overwrite" in err
        assert out.read_text() == "an earlier card\n"
    score.main([str(path), "--out", str(tmp_path / "card.json"), "--overwrite"])
    assert "metrics" in json.loads((tmp_path / "card.json").read_text())


@pytest.mark.slow
def test_non_utf8_file_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "preds.jsonl"
    bad = b'{"id": "x", "prediction": "caf\xe9", "reference": "a"}'  # Latin-1, not UTF-8
    path.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + bad + b"\n")
    result = _run(str(path), "--out", str(tmp_path / "scores.json"))
    assert result.returncode == 1
    column = bad.index(b"\xe9") + 1
    assert result.stderr.strip() == (
        f"error: {path}:2: not UTF-8 text (byte 0xe9 at column {column}); save the file as UTF-8"
    )


@pytest.mark.slow
def test_a_jvm_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys):
    """A JVM that dies (here: out of memory while loading, with an 8 MB heap) is one line, never a
    BrokenPipeError traceback."""
    import rrg.score.meteor

    monkeypatch.setattr(rrg.score.meteor, "METEOR_HEAP", "8m")
    score = _import_score()
    path = _write(tmp_path / "preds.jsonl", [json.dumps(r) for r in GOOD])
    with pytest.raises(SystemExit) as exit_info:
        score.main([str(path), "--out", str(tmp_path / "card.json")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().endswith(errors[0])
    assert "METEOR's Java process (meteor-1.5.jar) died (exit code 1)" in errors[0]
    assert "java.lang.OutOfMemoryError: Java heap space" in errors[0]
    assert not (tmp_path / "card.json").exists()
