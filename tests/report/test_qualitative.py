"""plot/qualitative.py: which studies it picks, that the coloured words are the overlap, and its files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from rrg.io import InputError
from rrg.report import qualitative
from rrg.report.cases import build_cases, load_run
from tests.helpers import shared_path, write_runs


@pytest.fixture(scope="module")
def lora(tmp_path_factory) -> Path:
    return write_runs(tmp_path_factory.mktemp("qualitative"))[0]


@pytest.fixture(scope="module")
def cases(lora) -> list[dict]:
    return build_cases([load_run(lora)], image_dir=shared_path("iu_xray", "images"))


def test_picks_best_median_and_worst_by_the_metric(cases):
    rouge = {c["id"]: c["runs"][0]["scores"]["ROUGE-L"] for c in cases}
    ranked = sorted(rouge, key=lambda s: -rouge[s])
    picked = qualitative.pick_studies(cases[::-1], "ROUGE-L", 3)  # not in file order
    assert [c["id"] for c, _ in picked] == ranked
    assert [label.split()[0] for _, label in picked] == ["best", "median", "worst"]
    assert [c["id"] for c, _ in qualitative.pick_studies(cases, "ROUGE-L", 2)] == [ranked[0], ranked[-1]]
    bleu = {c["id"]: c["runs"][0]["scores"]["BLEU-4"] for c in cases}
    assert qualitative.pick_studies(cases, "BLEU-4", 1)[0][0]["id"] == max(bleu, key=bleu.get)
    with pytest.raises(InputError, match="'42'"):
        qualitative.chosen_studies(cases, ["7", "42"])


def test_coloured_words_are_the_words_shared_with_the_reference(cases):
    picked = qualitative.chosen_studies(cases, ["1900", "7"])
    fig = qualitative.make_figure(picked, "lora")
    text_axes = fig.axes[1::2]
    for (case, _), ax in zip(picked, text_axes):
        coloured = [t.get_text() for t in ax.texts if t.get_color() == qualitative.MATCH]
        shown = case["runs"][0]
        ref, pred = case["reference"]["text"].split(" "), shown["text"].split(" ")
        assert coloured == [ref[i] for i in shown["ref_hits"]] + [pred[i] for i in shown["hits"]]
        assert coloured  # these studies share words with their references
    assert fig.axes[0].images  # the X-ray is drawn


def test_lines_fit_the_text_column_and_long_words_are_cut():
    words = [
        qualitative.Word("x" * 400, qualitative.OTHER),
        *[qualitative.Word("lung", qualitative.MATCH)] * 60,
    ]
    width = 300.0
    lines = qualitative.wrap(words, width)
    assert len(lines) > 3
    for line in lines:
        x, last = line[-1]
        assert x + qualitative._width(last.text, last.weight) <= width + 1e-6
    pieces = [w.text for line in lines for _, w in line if set(w.text) == {"x"}]
    assert len(pieces) > 1 and "".join(pieces) == "x" * 400  # cut, nothing lost


@pytest.mark.slow
def test_writes_png_and_pdf_and_names_a_missing_image(lora, tmp_path, capsys):
    out = tmp_path / "figs" / "qualitative.png"
    qualitative.main([str(lora), "--out", str(out), "--image_dir", str(tmp_path), "--dpi", "60"])
    assert Image.open(out).format == "PNG" and out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert "image(s) not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        qualitative.main([str(lora), "--ids", "404", "--out", str(out)])
    assert exit_info.value.code == 1 and "'404'" in capsys.readouterr().err


def test_a_dollar_sign_in_a_report_is_text_not_math(cases, tmp_path):
    import copy

    case = copy.deepcopy(qualitative.chosen_studies(cases, ["7"])[0])
    case[0]["runs"][0]["text"] = "Cost $5$ and $x^2$ normal $\\frac{$"
    case[0]["runs"][0]["hits"] = []
    fig = qualitative.make_figure([case], "lora")
    fig.canvas.draw()  # mathtext would raise its ParseException here
    shown = [t.get_text() for t in fig.axes[1].texts]
    assert "$x^2$" in shown and "$\\frac{$" in shown
    assert all(not t.get_parse_math() for t in fig.axes[1].texts)  # "$5$" is drawn as written, not as 5
