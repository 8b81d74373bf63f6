"""Text-only baselines (rrg/score/baselines.py, eval/baselines.py) on a small real sample of IU X-Ray, the split
files built from the CSVs alone (report2json --images_from_csv), and R2Gen-compatible scoring
(rrg/score/r2gen_compat.py, eval/score.py --r2gen_compat) on a hand-made case checked by hand."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from rrg.data.entries import Entry, load_entries
from rrg.data.iu_xray import build_reports_table
from rrg.data.protocols import SplitConfig, build_split
from rrg.data.sections import parse_sections
from rrg.io import InputError, atomic_write_json
from rrg.model.prompts import REFERENCE_PROMPT_PREFIX
from rrg.score.baselines import METHODS, PromptLabels, run_baseline
from rrg.score.card import read_predictions
from rrg.score.ngram import normalize_report
from rrg.score.r2gen_compat import UNK, R2GenCompat, R2GenVocabulary, whole_text
from tests.helpers import shared_path

TRAIN_STUDIES, TEST_STUDIES = 300, 30


@pytest.fixture(scope="module")
def table(iu_xray_dir):
    return build_reports_table(iu_xray_dir, images_from_csv=True)


def sample(splits: dict[str, list[Entry]], name: str, n_studies: int) -> list[Entry]:
    """The entries of the split's first n studies (all entries of each: the reference has one per image)."""
    keep = list(dict.fromkeys(e.study_id for e in splits[name]))[:n_studies]
    return [e for e in splits[name] if e.study_id in set(keep)]


@pytest.fixture(scope="module")
def sample_dirs(table, tmp_path_factory):
    """{protocol: folder with train_report.json and test_report.json}, a few hundred real studies each."""
    out = {}
    for protocol in ("reference", "clean"):
        splits = build_split(protocol, table, SplitConfig())
        folder = tmp_path_factory.mktemp(protocol)
        for name, n in (("train", TRAIN_STUDIES), ("test", TEST_STUDIES)):
            atomic_write_json(folder / f"{name}_report.json", [e.to_json() for e in sample(splits, name, n)])
        out[protocol] = folder
    return out


def run_cli(folder, method, out, seed=0) -> list[dict]:
    from rrg.score.baselines_command import main

    main(
        ["--method", method, "--json_file", str(folder / "test_report.json"),
         "--train_json", str(folder / "train_report.json"), "--out", str(out), "--seed", str(seed)]
    )  # fmt: skip
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_every_method_writes_the_eval_schema(sample_dirs, tmp_path):
    from rrg.generate.batch import prediction_line

    folder = sample_dirs["reference"]
    test, train = load_entries(folder / "test_report.json"), load_entries(folder / "train_report.json")
    train_reports = {e.response for e in train}
    eval_keys = set(prediction_line(test[0], test[0].images, "x", {"image_control": 0, "generation": 0,
                                                                        "model": 0, "adapter": 0}))  # fmt: skip
    for method in METHODS:
        lines = run_cli(folder, method, tmp_path / method)
        assert [line["id"] for line in lines] == [e.id for e in test]  # one line per entry, in file order
        for line, entry in zip(lines, test):
            assert set(line) == eval_keys | {"baseline", "split"}
            assert line["split"] == {"file": str(folder / "test_report.json"), "name": "test", "protocol": None}
            assert line["reference"] == entry.response and line["images"] == entry.images
            assert line["model"] == f"baseline:{method}" and line["image_control"] == "none"
            if method == "reference_copy":
                assert line["prediction"] == entry.response
            else:
                assert line["prediction"] in train_reports
                assert line["baseline"]["source_study"] in {e.study_id for e in train}
        by_study = {}
        for line in lines:  # a text-only method cannot tell a study's two images apart
            assert by_study.setdefault(line["study_id"], line["prediction"]) == line["prediction"]
        assert len(read_predictions(tmp_path / method / "predictions.jsonl")) == len(
            test
        )  # the scorer reads it
        counts = json.loads((tmp_path / method / "baseline.json").read_text())["counts"]
        assert counts["test_entries"] == len(test) and counts["test_studies"] == TEST_STUDIES


def test_methods_are_deterministic_and_seeded(sample_dirs, tmp_path):
    folder = sample_dirs["clean"]
    for method in METHODS:
        run_cli(folder, method, tmp_path / "a" / method)
        run_cli(folder, method, tmp_path / "b" / method)
        first = (tmp_path / "a" / method / "predictions.jsonl").read_bytes()
        assert first == (tmp_path / "b" / method / "predictions.jsonl").read_bytes(), method
    other_seed = run_cli(folder, "random", tmp_path / "seed1", seed=1)
    same_seed = [
        json.loads(x) for x in (tmp_path / "a" / "random" / "predictions.jsonl").read_text().splitlines()
    ]
    assert [x["prediction"] for x in other_seed] != [x["prediction"] for x in same_seed]


def test_constant_is_the_most_frequent_train_report(sample_dirs):
    train = load_entries(sample_dirs["clean"] / "train_report.json")
    result = run_baseline("constant", train, load_entries(sample_dirs["clean"] / "test_report.json"))
    texts = {normalize_report(c.text) for c in result.choices.values()}
    assert len(texts) == 1
    counts = {}
    for entry in train:
        key = normalize_report(entry.response)
        counts[key] = counts.get(key, 0) + 1
    assert counts[texts.pop()] == max(counts.values()) == result.counts["train_studies_with_this_report"]


def test_prompt_oracle_uses_the_labels_on_the_reference_protocol(sample_dirs, table):
    folder = sample_dirs["reference"]
    train, test = load_entries(folder / "train_report.json"), load_entries(folder / "test_report.json")
    result = run_baseline("prompt_oracle", train, test)
    assert result.counts["labels_used"] == 1
    assert result.counts["exact_labels"] > 0
    # report2json's files carry the indication: every label set is read exactly
    assert (
        "labels_with_indication_glued" not in result.counts
        and "labels_cut_at_a_known_label" not in result.counts
    )
    problems = {
        str(u): {x.strip().lower() for x in str(p).split(";")}
        for u, p in zip(table["uid"], table["Problems"])
    }
    for study, choice in result.choices.items():
        if choice.rule == "exact_labels":  # the train study's own Problems, from the CSV, not from the prompt
            assert problems[choice.source_study] == problems[study]
    # an exact match is found whenever the train sample has a study with the same Problems
    train_problems = {frozenset(problems[e.study_id]) for e in train}
    matchable = {e.study_id for e in test if frozenset(problems[e.study_id]) in train_problems}
    assert {s for s, c in result.choices.items() if c.rule == "exact_labels"} == matchable
    # the labels decide: the same prompt with another study's labels gets a report of a study with those
    entry = next(e for e in test if PromptLabels(test)(e) == {"normal"})
    donor = next(e for e in train if len(problems[e.study_id]) > 1)
    swapped = replace(entry, prompt=REFERENCE_PROMPT_PREFIX + donor.prompt.split("Chief Complaint: ")[1])
    swapped = replace(swapped, indication=donor.indication)
    choice = run_baseline("prompt_oracle", train, [swapped]).choices[entry.study_id]
    assert choice.rule == "exact_labels" and problems[choice.source_study] == problems[donor.study_id]


def test_prompt_oracle_on_the_clean_protocol_uses_no_labels(sample_dirs):
    folder = sample_dirs["clean"]
    train, test = load_entries(folder / "train_report.json"), load_entries(folder / "test_report.json")
    oracle = run_baseline("prompt_oracle", train, test)
    constant = run_baseline("constant", train, test)
    assert oracle.counts["labels_used"] == 0
    assert not any("label" in c.rule for c in oracle.choices.values())
    # every clean prompt is the same question: every train study ties, and the tie goes to the template
    assert oracle.counts["prompt_tie"] == TEST_STUDIES
    assert {s: c.text for s, c in oracle.choices.items()} == {s: c.text for s, c in constant.choices.items()}


def entry(uid: str, indication: str | None, report: str) -> Entry:
    return Entry(
        id=uid, study_id=uid, images=[f"{uid}.png"], prompt="q", response=report, indication=indication
    )


def test_nearest_indication_ties_missing_and_no_overlap_are_handled_and_counted():
    train = [
        entry("a", "Chest pain.", "Findings: A. Impression: A."),
        entry("b", "Cough and fever.", "Findings: B. Impression: B."),
        entry("c", "chest pain", "Findings: C. Impression: C."),
        entry("d", "Chest pain", "Findings: C. Impression: C."),
        *(entry(f"n{i}", None, "Findings: N. Impression: N.") for i in range(3)),  # the constant report
        entry("x", "#NAME?", "Findings: X. Impression: X."),  # the Kaggle CSV's Excel error: missing
    ]
    test = [
        entry("t1", "CHEST PAIN", "r"),  # a, c and d tie; C is the most frequent report among them
        entry("t2", "fever", "r"),  # nearest: b
        entry("t3", None, "r"),  # missing: the constant report
        entry("t4", "dyspnea", "r"),  # no word in common: the constant report
    ]
    result = run_baseline("nearest_indication", train, test)
    got = {s: (c.text, c.rule) for s, c in result.choices.items()}
    assert got == {
        "t1": ("Findings: C. Impression: C.", "tie"),
        "t2": ("Findings: B. Impression: B.", "nearest"),
        "t3": ("Findings: N. Impression: N.", "fallback_constant_missing"),
        "t4": ("Findings: N. Impression: N.", "fallback_constant_no_overlap"),
    }
    assert result.counts["train_studies_without_text"] == 4
    assert (result.counts["tie"], result.counts["nearest"]) == (1, 1)
    assert (result.counts["missing_text"], result.counts["no_shared_word"]) == (1, 1)


def test_prompt_oracle_refuses_mixed_protocols(sample_dirs):
    train = load_entries(sample_dirs["reference"] / "train_report.json")
    test = load_entries(sample_dirs["clean"] / "test_report.json")
    with pytest.raises(InputError, match="same protocol"):
        run_baseline("prompt_oracle", train, test)


@pytest.mark.slow
def test_splits_build_from_the_csvs_alone(iu_xray_dir, tmp_path):
    from rrg.data.report2json import main

    data = tmp_path / "kaggle"  # the two CSVs, no images folder
    data.mkdir()
    for name in ("indiana_reports.csv", "indiana_projections.csv"):
        (data / name).symlink_to(iu_xray_dir / name)
    with pytest.raises(SystemExit):  # without the flag the images folder is required, as before
        main(["--protocol", "reference", "--data_dir", str(data), "--out", str(tmp_path / "no")])
    assert (
        main(
            ["--protocol", "reference", "--data_dir", str(data), "--images_from_csv", "--out", str(tmp_path)]
        )
        == 0
    )
    test = load_entries(tmp_path / "test_report.json")
    assert len(test) == 1251 and len({e.study_id for e in test}) == 667  # the reference split's counts


# --------------------------------------------------------------------------- R2Gen-compatible scoring


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def r2gen_train(tmp_path):
    """Vocabulary by hand: the, heart, is, normal, no, acute, findings 3 times each, '.' 6 times; lungs and
    clear 2 times (study 4 has two entries, one per image, and counts once, as R2Gen counts each report)."""
    report = "The heart is normal. No acute findings."
    normal = [{"id": str(i), "images": [f"{i}.png"], "prompt": "q", "response": report} for i in (1, 2, 3)]
    lungs = [{"id": f"4_{k}", "study_id": "4", "images": [f"4_{k}.png"], "prompt": "q",
              "response": "Lungs clear. Lungs clear."} for k in (0, 1)]  # fmt: skip
    return write_jsonl(tmp_path / "train.jsonl", normal + lungs)


def test_r2gen_vocabulary_truncation_and_unk(tmp_path):
    vocab = R2GenVocabulary.from_file(r2gen_train(tmp_path))
    assert vocab.words == {"the", "heart", "is", "normal", "no", "acute", "findings", "."}
    assert len(vocab) == 9  # + <unk>
    compat = R2GenCompat(vocab)
    long_text = "Findings: " + "The heart is normal. " * 13  # 65 tokens
    assert compat.reference(long_text).split() == ("the heart is normal . " * 13).split()[:59]
    assert compat.prediction(long_text).split() == ("the heart is normal . " * 13).split()[:60]
    assert compat.reference("Impression: Lungs clear.") == f"{UNK} {UNK} ."
    # a cut text may end in "findings": scored whole, and the section parser reads it as text too
    assert whole_text("no acute findings").body == "no acute findings"
    assert parse_sections("no acute findings").body == "no acute findings"  # a bare closing word is text


@pytest.mark.slow
def test_score_r2gen_compat_by_hand(tmp_path):
    from rrg.report.results import load_scores, tooling_label
    from rrg.score.command import main

    # Reference: 63 tokens -> the first 59 (R2Gen's 60 ids include BOS): "the heart is <unk> <unk> ." + 10 x
    # "the heart is normal ." + "no acute findings" (the 59th token ends the text: a section parser would
    # take it for a heading). Prediction: 60 tokens, kept whole: the same + ".". zebra, giraffe and okapi
    # all become <unk> and match. So the reference is the prediction's first 59 tokens: of its 61-n
    # n-grams, 60-n match (the reference has exactly those), brevity penalty 1 (60 > 59 tokens):
    #   BLEU-1 = 59/60, BLEU-4 = (59/60 * 58/59 * 57/58 * 56/57) ** (1/4) = (56/60) ** 0.25
    #   ROUGE-L: LCS 59, P = 59/60, R = 1, F(beta=1.2) = (1 + 1.44) P R / (R + 1.44 P)
    normal = "The heart is normal. " * 10
    reference = f"Findings: The heart is zebra zebra. {normal}No acute findings. Impression: Lungs clear."
    prediction = f"Findings: The heart is giraffe okapi. {normal}No acute findings."
    predictions = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "t", "prediction": prediction, "reference": reference}]
    )
    out = tmp_path / "scores.json"
    main([str(predictions), "--out", str(out), "--r2gen_compat", "--train_json", str(r2gen_train(tmp_path))])
    card = json.loads(out.read_text())
    report = card["metrics"]["report"]
    assert report["BLEU-1"] == pytest.approx(59 / 60, rel=1e-6)
    assert report["BLEU-4"] == pytest.approx((56 / 60) ** 0.25, rel=1e-6)
    p = 59 / 60
    assert report["ROUGE-L"] == pytest.approx(2.44 * p / (1 + 1.44 * p), rel=1e-6)
    assert report["CIDEr"] is None and card["metrics"]["findings"]["BLEU-1"] is None
    assert card["settings"]["r2gen_compat"]["reference_tokens_kept"] == 59
    assert card["settings"]["r2gen_compat"]["vocabulary_size"] == 9
    assert card["counts"]["r2gen_compat"] == {
        "references": 1, "references_cut": 1, "reference_tokens_dropped": 4, "reference_unk": 2,
        "predictions": 1, "predictions_cut": 0, "prediction_unk": 2,
    }  # fmt: skip
    assert not any("raw" in note for note in card["notes"])
    assert "R2Gen-compatible" in tooling_label(load_scores(out))
    assert not math.isnan(report["METEOR"])


def test_score_r2gen_compat_flags(tmp_path):
    from rrg.score.command import parse_args

    with pytest.raises(SystemExit):
        parse_args(["p.jsonl", "--r2gen_compat"])  # no vocabulary
    with pytest.raises(SystemExit):
        parse_args(["p.jsonl", "--r2gen_compat", "--train_json", "t.json", "--legacy"])


def test_r2gen_vocabulary_from_r2gen_annotation():
    annotation = shared_path("iu_xray", "r2gen_annotation.json")
    vocab = R2GenVocabulary.from_file(annotation)
    assert vocab.reports == 2069  # R2Gen's train split, one report per study
    reports = [x["report"] for x in json.loads(annotation.read_text())["train"]]
    counts = {}
    for report in reports:
        for token in normalize_report(report).split():
            counts[token] = counts.get(token, 0) + 1
    assert vocab.words == {t for t, c in counts.items() if c >= 3} and {"heart", "."} <= vocab.words


@pytest.mark.slow
def test_baselines_figure_and_summary_pick_up_clinical_f1_when_present(tmp_path):
    from rrg.report.baselines_figure import main

    metrics = {
        "BLEU-1": 0.4,
        "BLEU-2": 0.3,
        "BLEU-3": 0.2,
        "BLEU-4": 0.15,
        "METEOR": 0.2,
        "ROUGE-L": 0.3,
        "CIDEr": 0.5,
    }
    cards = {
        "constant": {
            "metrics": {"report": metrics},
            "clinical": {"labeler": "offline", "summary": {"f1_micro_14": 0.123, "f1_micro_5": 0.045}},
        },
        "random": {"metrics": {"report": metrics}},  # scored with --labeler none: no clinical block
    }
    for method, card in cards.items():
        atomic_write_json(tmp_path / "clean" / f"{method}.scores.json", card)
    main(["--root", str(tmp_path), "--out", str(tmp_path / "fig.png"), "--summary", str(tmp_path / "s.md")])
    rows = {
        line.split(" | ")[1]: line
        for line in (tmp_path / "s.md").read_text().splitlines()
        if "| clean |" in line
    }
    assert rows["constant"].endswith("| 0.123 | 0.045 |") and rows["random"].endswith("| n/a | n/a |")
    # The column names the labeler: offline F1 is never to be read as CheXbert's.
    assert "| F1-14 micro, CheXpert rules (offline) | F1-5 micro, CheXpert rules (offline) |" in (
        tmp_path / "s.md"
    ).read_text()
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_labels_are_read_from_the_reference_papers_own_format(sample_dirs, tmp_path):
    """The paper's {prompt, input_image, response} files carry no indication: the glued last label is cut
    at a label seen unglued elsewhere, and the label sets match those of report2json's files."""
    folder = sample_dirs["reference"]
    ours = {name: load_entries(folder / f"{name}_report.json") for name in ("train", "test")}
    papers = {}
    for name, entries in ours.items():
        three = [
            {"prompt": e.prompt, "input_image": f"./images/{e.images[0]}", "response": e.response}
            for e in entries
        ]
        atomic_write_json(tmp_path / f"{name}.json", three)
        papers[name] = load_entries(tmp_path / f"{name}.json")
    everything = [*papers["train"], *papers["test"]]
    read_paper, read_ours = PromptLabels(everything), PromptLabels([*ours["train"], *ours["test"]])
    same = sum(read_paper(p) == read_ours(o) for p, o in zip(everything, [*ours["train"], *ours["test"]]))
    assert read_paper.counts["labels_cut_at_a_known_label"] > 0
    assert same >= 0.9 * len(everything)
    result = run_baseline("prompt_oracle", papers["train"], papers["test"])
    assert result.counts["labels_used"] == 1 and result.counts["exact_labels"] > 0
