"""The plot/ and scripts/ entry points read their flags through rrg.cli.parse_flags: a bad value is one
line naming the flag, and --help shows every flag's default.

Each script's package module is imported and its parser run in this process; nothing past the flags runs, so a
value that passed would fail the test with a missing-file error or an empty SystemExit, not hang.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# script -> (its settings dataclass, how its flags are read: a function taking argv)
SCRIPTS = {
    "plot/baselines.py": ("BaselinesPlotConfig", "parse_args"),
    "plot/browse.py": ("BrowseSettings", "parse_args"),
    "plot/qualitative.py": ("QualitativeSettings", "parse_args"),
    "scripts/browse_benchmark.py": ("BrowseBenchmarkSettings", "main"),
    "scripts/install_wordnet.py": ("WordnetSettings", "parse_args"),
    "scripts/make_smoke_inputs.py": ("SmokeInputSettings", "main"),
    "scripts/validate_labeler.py": ("ValidateLabelerSettings", "parse_args"),
}


# script -> the package module that holds its settings and main (the script is a thin entry point)
MODULES = {
    "plot/baselines.py": "rrg.report.baselines_figure",
    "plot/browse.py": "rrg.report.browse",
    "plot/qualitative.py": "rrg.report.qualitative",
    "scripts/browse_benchmark.py": "rrg.bench.browse",
    "scripts/install_wordnet.py": "rrg.score.wordnet",
    "scripts/make_smoke_inputs.py": "rrg.data.smoke_inputs",
    "scripts/validate_labeler.py": "rrg.score.clinical.validate",
}


def load(script: str):
    return importlib.import_module(MODULES[script])


def run(script: str, argv: list[str]):
    module = load(script)
    return getattr(module, SCRIPTS[script][1])(argv)


def one_line_error(capsys, script: str, argv: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        run(script, argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return e.value.code, err.splitlines()[-1] if err else ""


@pytest.mark.parametrize(
    "script, argv, words",
    [
        ("plot/baselines.py", ["--bogus", "1"], "unrecognized arguments: --bogus 1"),
        ("plot/browse.py", ["r", "--thumbnails", "-1"], "--thumbnails must be >= 0 (got -1)"),
        ("plot/browse.py", ["r", "--thumbnails", "x"], "invalid int value: 'x'"),
        ("plot/browse.py", ["r", "--out", ""], "--out must not be empty"),
        ("plot/qualitative.py", ["r", "--k", "0"], "--k must be >= 1 (got 0)"),
        ("plot/qualitative.py", ["r", "--dpi", "0"], "--dpi must be >= 1 (got 0)"),
        ("plot/qualitative.py", ["r", "--metric", "bogus"], "invalid choice: 'bogus'"),
        ("scripts/browse_benchmark.py", ["--studies", "0"], "--studies must be >= 1 (got 0)"),
        ("scripts/browse_benchmark.py", ["--loads", "0"], "--loads must be >= 1 (got 0)"),
        ("scripts/browse_benchmark.py", ["--seed", "-1"], "--seed must be >= 0 (got -1)"),
        ("scripts/install_wordnet.py", ["--download"], "unrecognized arguments: --download"),
        ("scripts/make_smoke_inputs.py", ["--studies", "0"], "--studies must be >= 1 (got 0)"),
        ("scripts/make_smoke_inputs.py", ["--studies", "-3"], "--studies must be >= 1 (got -3)"),
        ("scripts/validate_labeler.py", ["--samples", "-1"], "--samples must be >= 0 (got -1)"),
        ("scripts/validate_labeler.py", ["--seed", "-1"], "--seed must be >= 0 (got -1)"),
    ],
)
def test_bad_flag_is_one_line(script, argv, words, capsys):
    code, line = one_line_error(capsys, script, argv)
    assert code == 2 and words in line, line


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_every_default(script, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no default wrapped across lines
    with pytest.raises(SystemExit) as e:
        run(script, ["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    settings = getattr(load(script), SCRIPTS[script][0])
    for field in dataclasses.fields(settings):
        if field.metadata.get("positional") and field.default is dataclasses.MISSING:
            assert field.name in out
            continue
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert field.metadata["help"] and f"--{field.name}" in out, field.name
        assert f"{field.metadata['help']} (default: {default if default != '' else repr('')})" in out, (
            field.name
        )


@pytest.mark.parametrize(
    "script, argv, expected",
    [  # the invocations of scripts/smoke.sh and the docs, read as before
        (
            "plot/browse.py",
            ["e", "--image_dir", "i", "--entries", "t.json", "--names", "smoke (tiny)", "--out", "o.html"],
            {"results": "e", "compare": [], "names": ["smoke (tiny)"], "thumbnails": 0, "screenshot": None},
        ),
        (
            "plot/browse.py",
            ["results/lora", "--compare", "results/zero_shot", "x", "--thumbnails", "256"],
            {
                "compare": ["results/zero_shot", "x"],
                "names": None,
                "thumbnails": 256,
                "image_dir": "data/images",
            },
        ),
        (
            "plot/qualitative.py",
            ["r", "--ids", "1900", "7", "--out", "q.png"],
            {"ids": ["1900", "7"], "k": 3, "metric": "ROUGE-L", "dpi": 200, "out": "q.png", "name": None},
        ),
        (
            "plot/baselines.py",
            ["--root", "o", "--out", "o/b.png", "--summary", "o/s.md"],
            {"root": Path("o"), "out": Path("o/b.png"), "summary": Path("o/s.md")},
        ),
        ("plot/baselines.py", [], {"root": Path("results/baselines"), "summary": None}),
        ("scripts/install_wordnet.py", ["--no_download"], {"no_download": True, "nltk_data": None}),
        ("scripts/install_wordnet.py", [], {"no_download": False, "source": Path("/usr/share/wordnet")}),
        (
            "scripts/validate_labeler.py",
            ["--data_dir", "d", "--out", "v.json", "--samples", "1"],
            {"data_dir": Path("d"), "out": Path("v.json"), "samples": 1, "seed": 0},
        ),
    ],
)
def test_invocations_parse_as_before(script, argv, expected):
    settings = run(script, argv)
    assert {key: getattr(settings, key) for key in expected} == expected


def test_main_reads_its_flags(tmp_path, capsys):
    # make_smoke_inputs and browse_benchmark read argv in main: --shared_data reaches the check of its files.
    for script in ("scripts/make_smoke_inputs.py",):
        with pytest.raises(SystemExit) as e:
            run(script, ["--out", str(tmp_path / "o"), "--shared_data", str(tmp_path / "none")])
        assert e.value.code == 1 and str(tmp_path / "none") in capsys.readouterr().err
