"""The case browser colours clinical agreement as clinical F1 scores it (positive vs the rest, uncertain
as the card's policy says), and its "disagrees" filter follows the same rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrg.report import browse
from tests.helpers import shared_path, write_runs

REFERENCE = {
    "Pleural Effusion": "positive",
    "Pneumothorax": "negative",
    "Edema": "positive",
    "Fracture": "uncertain",
}
LORA = {"Pleural Effusion": "uncertain", "Edema": "negative", "Fracture": "negative"}
CLINICAL = {"1900": {"reference": REFERENCE, "predictions": {"lora": LORA, "zero_shot": dict(REFERENCE)}}}
# observation -> lora's cell, under each uncertain policy
EXPECTED = {
    "positive": {
        "Pleural Effusion": "agree",
        "Pneumothorax": "agree",
        "Edema": "disagree",
        "Fracture": "disagree",
    },
    "negative": {
        "Pleural Effusion": "disagree",
        "Pneumothorax": "agree",
        "Edema": "disagree",
        "Fracture": "agree",
    },
}


def _page(tmp_path: Path, uncertain: str | None) -> Path:
    lora, zero_shot = write_runs(tmp_path)
    if uncertain is not None:
        card_path = lora / "scores.json"
        card = json.loads(card_path.read_text())
        card["clinical"] = {**(card.get("clinical") or {}), "uncertain": uncertain}
        card_path.write_text(json.dumps(card))
    out = tmp_path / "page" / "index.html"
    return browse.build_page(
        [lora, zero_shot], out, image_dir=shared_path("iu_xray", "images"), clinical=CLINICAL
    )


@pytest.mark.parametrize(("uncertain", "expected"), [(None, "positive"), ("negative", "negative")])
def test_page_data_carries_the_cards_uncertain_policy(tmp_path, uncertain, expected):
    html = _page(tmp_path, uncertain).read_text()
    assert f'"uncertain_as":"{expected}"' in html




def _cells(driver) -> dict[str, str]:
    rows = driver.find_elements("css selector", "article[data-id='1900'] tr[data-observation]")
    return {
        r.get_attribute("data-observation"): r.find_elements("tag name", "td")[1].get_attribute("class")
        for r in rows
    }


@pytest.mark.slow
@pytest.mark.parametrize("uncertain", ["positive", "negative"])
def test_colours_and_disagrees_filter_follow_f1(driver, tmp_path, uncertain):
    from selenium.webdriver.support.ui import Select

    driver.get(_page(tmp_path, uncertain).resolve().as_uri())
    assert _cells(driver) == EXPECTED[uncertain]
    legend = driver.find_element("css selector", "article[data-id='1900'] caption.legend").text
    assert all(sym in legend for sym in ("+", "\u2212", "?", "\u00b7")) and f"as {uncertain}" in legend
    Select(driver.find_element("id", "run")).select_by_index(0)
    for observation, cell in EXPECTED[uncertain].items():
        Select(driver.find_element("id", "observation")).select_by_value(observation)
        Select(driver.find_element("id", "obs-mode")).select_by_value("wrong")
        shown = driver.execute_script(
            "return [...document.querySelectorAll('article.case')].map(a => a.dataset.id)"
        )
        assert ("1900" in shown) == (cell == "disagree"), observation
