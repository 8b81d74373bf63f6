"""The leak audit: report texts shared across splits, and labels that leak into prompts."""

from __future__ import annotations

import re

import pandas as pd

from rrg.data.entries import Entry
from rrg.data.iu_xray import clean_text, holds_report_text, is_missing, normalised
from rrg.data.protocols import split_counts


def report_text_leaks(entries: list[Entry]) -> int:
    """Entries whose prompt holds a sentence of their own report (the context fields' guard, audited)."""
    return sum(holds_report_text(e.prompt, e.findings, e.impression) for e in entries)


def holds_phrase(text: str, phrase: str) -> bool:
    """phrase occurs in text starting at a word start ("normal" is not in "abnormal").

    Only the start is checked: the reference glues the indication (or "nan") right after the labels.
    """
    return re.search(rf"(?<!\w){re.escape(phrase)}", text) is not None


def label_leaks(entries: list[Entry], labels: dict[str, dict[str, str]]) -> dict:
    """Entries whose prompt holds their study's Problems or MeSH text (labels extracted from the report).

    The indication is taken out of the prompt first: it is history known before the exam, not a leak,
    even when it happens to contain a label's words.
    """
    out = {}
    for column in ("Problems", "MeSH"):
        hits = 0
        for e in entries:
            label = labels.get(e.study_id, {}).get(column)
            prompt = e.prompt.replace(e.indication, " ") if e.indication else e.prompt
            hits += bool(label) and holds_phrase(prompt, label)
        out[f"{column}_in_prompt"] = hits
    return out


def shared_texts(train: list[Entry], test: list[Entry], key) -> dict:
    """Test studies whose text (findings, or the whole report) appears verbatim in a train study."""
    train_texts = {key(e) for e in train if key(e)}
    test_by_study = {e.study_id: key(e) for e in test if key(e)}
    hits = [uid for uid, text in test_by_study.items() if text in train_texts]
    return {
        "test_studies": len(hits),
        "fraction_of_test": round(len(hits) / max(len(test_by_study), 1), 4),
        "distinct_texts": len({test_by_study[uid] for uid in hits}),
    }


def table_counts(table: pd.DataFrame) -> dict:
    findings = table["findings"].map(clean_text).notna()
    impression = table["impression"].map(clean_text).notna()
    return {
        "studies": len(table),
        "with_findings": int(findings.sum()),
        "with_impression": int(impression.sum()),
        "with_findings_and_impression": int((findings & impression).sum()),
        "images": int(table["num_images"].sum()),
    }


def leak_audit(splits: dict[str, list[Entry]], table: pd.DataFrame) -> dict:
    """Label-derived text in prompts, reports shared between train and test, studies in several splits, counts."""
    labels = {
        str(row["uid"]): {c: str(row[c]).strip() for c in ("Problems", "MeSH") if not is_missing(row[c])}
        for _, row in table.iterrows()
    }
    owners: dict[str, set[str]] = {}
    for name, entries in splits.items():
        for e in entries:
            owners.setdefault(e.study_id, set()).add(name)
    in_several = sorted((uid for uid, names in owners.items() if len(names) > 1), key=int)
    audit: dict = {
        "table": table_counts(table),
        "splits": {name: split_counts(entries) for name, entries in splits.items()},
        "label_fields_in_prompts": {name: label_leaks(entries, labels) for name, entries in splits.items()},
        "studies_in_several_splits": {"count": len(in_several), "uids": in_several[:50]},
    }
    train, test = splits.get("train", []), splits.get("test", [])
    audit["train_test_shared_text"] = {
        "findings": shared_texts(train, test, lambda e: normalised(e.findings)),
        "report": shared_texts(train, test, lambda e: normalised(f"{e.findings} {e.impression}")),
    }
    leaks = sum(v for counts in audit["label_fields_in_prompts"].values() for v in counts.values())
    audit["label_leak"] = leaks > 0
    audit["report_text_in_prompts"] = {name: report_text_leaks(entries) for name, entries in splits.items()}
    return audit


def format_audit(audit: dict) -> str:
    """A short human-readable summary of leak_audit's result."""
    lines = [f"studies in table: {audit['table']}"]
    for name, counts in audit["splits"].items():
        leaks = audit["label_fields_in_prompts"][name]
        lines.append(
            f"{name:>5}: {counts['studies']} studies, {counts['entries']} entries, {counts['images']} images, "
            f"views {counts['views']}; prompts holding Problems {leaks['Problems_in_prompt']}, MeSH {leaks['MeSH_in_prompt']}"
        )
        if counts.get("studies_without_frontal"):
            lines.append(
                f"       {counts['studies_without_frontal']} {name} studies have no frontal image: "
                "they use a lateral (or unlabelled) view instead"
            )
    lines.append(f"studies in several splits: {audit['studies_in_several_splits']['count']}")
    shared = audit["train_test_shared_text"]
    lines.append(
        f"test studies whose text is verbatim in train: findings {shared['findings']['test_studies']} "
        f"({shared['findings']['fraction_of_test']:.1%}), whole report {shared['report']['test_studies']} "
        f"({shared['report']['fraction_of_test']:.1%})"
    )
    if audit["label_leak"]:
        lines.append("LEAK: prompts contain label fields derived from the report (Problems/MeSH)")
    return "\n".join(lines)
