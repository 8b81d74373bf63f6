"""The offline labeler on report patterns where it differed from CheXpert's own rules."""

import pytest

from rrg.score.clinical.labeler import label_reports


def _labels(text: str) -> dict:
    return {k: v for k, v in label_reports([text])[0].items() if v}


def test_a_hedge_before_a_comma_does_not_reach_the_next_clauses_finding():
    text = (
        "Small rounded bilateral axillary densities not seen on the previous exam most suggestive of "
        "artifacts, healed right lateral 10th rib fracture noted.."
    )
    labels = _labels(text)
    assert labels["Fracture"] == "positive"
    assert "No Finding" not in labels


@pytest.mark.parametrize(
    "text",
    [
        "There is a 9 mm nodule that is not definitively calcified.",
        "A 9 mm nodule that not definitively calcified.",
    ],
)
def test_a_negation_inside_a_relative_clause_leaves_the_lesion_positive(text):
    labels = _labels(text)
    assert labels["Lung Lesion"] == "positive"
    assert "No Finding" not in labels


def test_a_relative_clause_does_not_undo_a_negation_before_the_finding():
    labels = _labels("No pneumothorax or effusion that would require drainage.")
    assert labels["Pneumothorax"] == "negative" and labels["Pleural Effusion"] == "negative"


def test_interval_resolution_is_a_negation():
    # CheXpert's negation.txt reads "resolution of X" / "X has resolved" as X absent now.
    labels = _labels("Interval resolution of left effusion.")
    assert labels["Pleural Effusion"] == "negative"
    assert labels["No Finding"] == "positive"


@pytest.mark.parametrize(
    "text", ["Borderline cardiomegaly.", "The heart is borderline enlarged.", "Borderline heart size."]
)
def test_borderline_heart_is_uncertain_cardiomegaly(text):
    # CheXpert's "borderline heart size" rule; uncertain counts as positive under the default policy.
    assert _labels(text)["Cardiomegaly"] == "uncertain"


def test_not_significantly_enlarged_is_negative():
    labels = _labels("The heart is not significantly enlarged.")
    assert labels["Cardiomegaly"] == "negative"
