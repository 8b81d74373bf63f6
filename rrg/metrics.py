"""Report-generation metrics: BLEU-1..4, METEOR, ROUGE-L and CIDEr with the pycocoevalcap scorers.

Figures are corpus-level, as the IU X-Ray literature (R2Gen and followers) reports them: BLEU from the
corpus n-gram counts, METEOR from meteor-1.5.jar's aggregated statistics, ROUGE-L and CIDEr as means
over samples (CIDEr's document frequencies from the scored references). Text is normalised the R2Gen
way by default (`normalize_report`). SPICE is left out: it needs a download (Stanford CoreNLP) that
cannot happen offline.

Bootstrap confidence intervals resample studies and are exact for every metric: each metric is a
function of per-sample statistics computed once (BLEU: n-gram counts and lengths, whose corpus score
is a function of their sums; ROUGE-L: per-sample scores; METEOR: the jar's per-sample statistic
vectors, re-aggregated in numpy with the jar's formula; CIDEr: per-sample n-gram tables, with the
document frequencies recomputed from the references of each resample, as pycocoevalcap would on the
resampled corpus). Tests check each against pycocoevalcap on explicit resamples.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import precook
from pycocoevalcap.meteor import meteor as pycocoevalcap_meteor
from pycocoevalcap.meteor.meteor import METEOR_JAR, Meteor
from pycocoevalcap.rouge.rouge import Rouge
from scipy import sparse
from tqdm import tqdm

from .entries import study_id_from_filename
from .io import InputError, iter_jsonl
from .sections import Sections, parse_sections

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SECTIONS = ("report", "findings", "impression")
# corpus_scores' keys and the names pycocoevalcap (and published tables such as test_summary.json) use.
COCO_NAMES = {
    "BLEU-1": "Bleu_1",
    "BLEU-2": "Bleu_2",
    "BLEU-3": "Bleu_3",
    "BLEU-4": "Bleu_4",
    "METEOR": "METEOR",
    "ROUGE-L": "ROUGE_L",
    "CIDEr": "CIDEr",
}

# ---------------------------------------------------------------------------------------------------
# Text normalisation


def normalize_report(text: str) -> str:
    """R2Gen's clean_report_iu_xray: lower case, list numbering dropped, punctuation removed inside
    sentences, sentences joined by " . " and ended by " .".

    The character class is R2Gen's own, range quirk included (`:-\\[` spans ':' to '[', so ; < = > ? @
    go too). Two deliberate differences: runs of whitespace become one space (line breaks would break
    METEOR's line protocol, and ROUGE-L splits on single spaces), and a text without words stays ""
    (R2Gen would make it " .").
    """
    report_cleaner = (
        text.replace("..", ".")
        .replace("..", ".")
        .replace("..", ".")
        .replace("1. ", "")
        .replace(". 2. ", ". ")
        .replace(". 3. ", ". ")
        .replace(". 4. ", ". ")
        .replace(". 5. ", ". ")
        .replace(" 2. ", ". ")
        .replace(" 3. ", ". ")
        .replace(" 4. ", ". ")
        .replace(" 5. ", ". ")
        .strip()
        .lower()
        .split(". ")
    )

    def sent_cleaner(sentence: str) -> str:
        cleaned = (
            sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "").strip().lower()
        )
        return re.sub(r"[.,?;*!%^&_+():-\[\]{}]", "", cleaned)

    report = " . ".join(sent_cleaner(s) for s in report_cleaner) + " ."
    tokens = report.split()
    return " ".join(tokens) if any(t != "." for t in tokens) else ""


# ---------------------------------------------------------------------------------------------------
# METEOR: one JVM per run


METEOR_MODULE_WEIGHTS = np.array(
    [1.0, 0.6, 0.8, 0.6]
)  # exact, stem, synonym, paraphrase ("-l en", task rank)
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.2, 0.6, 0.75
# pycocoevalcap's heap. The jar's aligner needs memory and time that grow faster than the text: a
# prediction of 5,000 x "Effusion." (10,000 tokens) exhausted 2 GB after 30 s, 2,000 tokens took 3 s
# (2-core CPU box). So METEOR sees at most METEOR_MAX_WORDS words of each text, ~4x the longest IU
# X-Ray report (230 words); only a degenerate text is cut, and the card counts them.
METEOR_HEAP = "2G"
METEOR_MAX_WORDS = 1000
_FIRST_WORDS = re.compile(rf"\s*(?:\S+\s+){{{METEOR_MAX_WORDS - 1}}}\S+")
_LINE_BREAKS = re.compile(r"[\r\n]")  # what ends a line for the jar's reader (Java's readLine)


# Every scorer's input is bounded before any work starts, as METEOR's is: pycocoevalcap's ROUGE-L
# builds a length x length table (a 50 MB one-line prediction grew it past 13 GB), spaCy refuses texts
# over 1,000,000 characters (after minutes of work) and BLEU/CIDEr count every n-gram. Each prediction
# and reference is cut to its first SCORER_MAX_WORDS words and SCORER_MAX_CHARS characters, ~4x and ~7x
# the longest IU X-Ray report (230 words, 1,417 characters): only degenerate texts are cut, and the
# card counts them (counts.texts_cut).
SCORER_MAX_WORDS = METEOR_MAX_WORDS
SCORER_MAX_CHARS = 10_000
_FIRST_SCORER_WORDS = re.compile(rf"\s*(?:\S+\s+){{{SCORER_MAX_WORDS - 1}}}\S+")


def bound_text(text: str) -> str:
    """The text as every scorer sees it: its first SCORER_MAX_CHARS characters, then its first
    SCORER_MAX_WORDS words (spacing kept, for raw scoring)."""
    text = text[:SCORER_MAX_CHARS]
    match = _FIRST_SCORER_WORDS.match(text)
    return text[: match.end()] if match else text


def bound_records(records: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """Records with prediction and references bounded (bound_text), and how many texts were cut."""
    cut = {"prediction": 0, "reference": 0}
    bounded = []
    for record in records:
        pred = bound_text(record["prediction"])
        cut["prediction"] += pred != record["prediction"]
        refs = record["reference"]
        if isinstance(refs, str):
            new_refs = bound_text(refs)
            cut["reference"] += new_refs != refs
        else:
            new_refs = [bound_text(r) for r in refs]
            cut["reference"] += sum(a != b for a, b in zip(new_refs, refs))
        bounded.append({**record, "prediction": pred, "reference": new_refs})
    return bounded, cut


class MeteorError(InputError):
    """METEOR's Java process could not start or died; reported as one line, like bad input."""


def meteor_cuts(text: str) -> bool:
    """Whether meteor_text cuts this text."""
    return len(text.replace("|||", " ").split()) > METEOR_MAX_WORDS


def meteor_text(text: str) -> str:
    """A text as the jar's line protocol can carry it: one segment per line and fields split by "|||",
    so line breaks and "|||" become spaces; everything else is passed as given (with -norm the jar
    tokenises itself). Cut after METEOR_MAX_WORDS words."""
    text = _LINE_BREAKS.sub(" ", text.replace("|||", " "))
    match = _FIRST_WORDS.match(text)
    return text[: match.end()] if match else text


class MeteorScorer(Meteor):
    """pycocoevalcap's Meteor (meteor-1.5.jar, `-l en -norm`, 2 GB heap), started once and reused for
    every section and resample. Use as a context manager, or call close().

    The JVM's error output goes to a file (an unread pipe could fill and block it), so when the JVM
    dies its last line (e.g. "java.lang.OutOfMemoryError: Java heap space") is in the MeteorError.
    """

    def __init__(self) -> None:  # pycocoevalcap's command, with stderr to a file
        self._closed = True
        self.lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the JVM; close() closes it)
        self.meteor_cmd = [
            "java",
            "-jar",
            f"-Xmx{METEOR_HEAP}",
            METEOR_JAR,
            "-",
            "-",
            "-stdio",
            "-l",
            "en",
            "-norm",
        ]
        try:
            self.meteor_p = subprocess.Popen(
                self.meteor_cmd,
                cwd=os.path.dirname(os.path.abspath(pycocoevalcap_meteor.__file__)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        except FileNotFoundError:
            self._stderr.close()
            raise MeteorError(
                "METEOR needs Java (`java` not found): install a JRE, e.g. apt-get install default-jre-headless"
            ) from None
        self._closed = False

    def _died(self) -> MeteorError:
        try:  # its output has ended: it is exiting
            code = self.meteor_p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr.seek(0)
        lines = [line.strip() for line in self._stderr.read().decode(errors="replace").splitlines()]
        errors = [line for line in lines if "Error" in line or "Exception" in line] or lines or [""]
        status = f"exit code {code}" if code is not None else "no answer"
        return MeteorError(f"METEOR's Java process (meteor-1.5.jar) died ({status}): {errors[0][:200]}")

    def _readline(self) -> str:
        line = self.meteor_p.stdout.readline()
        if not line:  # end of file: the JVM is gone
            raise self._died()
        return line.decode().strip()

    def _write(self, text: str) -> None:
        try:
            self.meteor_p.stdin.write(text.encode())
            self.meteor_p.stdin.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the pipe was closed
            pass  # the reader sees the end of the JVM's output and says why

    def stats(self, hypothesis: str, references: Sequence[str]) -> str:
        """The jar's statistic vector (23 numbers, as a string) for one sample."""
        return self.stats_many([hypothesis], [references])[0]

    def stats_many(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[str]:
        """stats() for many samples, pipelined: a thread feeds the SCORE lines while this one reads the
        answers, so the cost is the jar's work, not one pipe round trip per sample (and neither side can
        block on a full pipe)."""
        lines = [
            " ||| ".join(("SCORE", " ||| ".join(meteor_text(r) for r in refs), meteor_text(hyp))) + "\n"
            for hyp, refs in zip(hypotheses, references)
        ]
        with self.lock:
            writer = threading.Thread(target=self._write, args=("".join(lines),), daemon=True)
            writer.start()
            try:
                return [self._readline() for _ in lines]
            finally:
                writer.join()

    def corpus_score(self, stats: Sequence[str]) -> float:
        """The jar's corpus METEOR from per-sample statistics (what pycocoevalcap's compute_score reports)."""
        if not stats:
            return 0.0
        with self.lock:
            self._write("EVAL ||| " + " ||| ".join(stats) + "\n")
            for _ in stats:
                self._readline()
            return float(self._readline())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError):  # a dead JVM's pipe
                self.meteor_p.stdin.close()
            self.meteor_p.kill()
            self.meteor_p.wait()
            self._stderr.close()

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def meteor_from_stats(stats: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Corpus METEOR for each row of `weights` (resample counts, shape (B, N)) from the jar's per-sample
    statistics (shape (N, 23)): MeteorStats.addStats + computeMetrics of meteor-1.5, in numpy."""
    tst_len, ref_len, tst_func, ref_func = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    stages = stats[:, 4:20].reshape(-1, 4, 4)  # per stage: test content, ref content, test func, ref func
    chunks, tst_words, ref_words = stats[:, 20], stats[:, 21], stats[:, 22]
    tst_total = stages[:, :, [0, 2]].sum(axis=(1, 2))
    ref_total = stages[:, :, [1, 3]].sum(axis=(1, 2))
    # addStats skips the chunk of a segment that matched its reference perfectly in one chunk.
    perfect = (tst_total == tst_len) & (ref_total == ref_len) & (chunks == 1.0)
    chunks = np.where(perfect, 0.0, chunks)

    w = weights
    delta = METEOR_DELTA
    t_len, r_len, t_func, r_func = w @ tst_len, w @ ref_len, w @ tst_func, w @ ref_func
    t_total, r_total, n_chunks = w @ tst_total, w @ ref_total, w @ chunks
    t_words, r_words = w @ tst_words, w @ ref_words
    stage_sums = np.einsum("bn,nsk->bsk", w, stages)
    mw = METEOR_MODULE_WEIGHTS
    t_matches = delta * stage_sums[:, :, 0] @ mw + (1 - delta) * stage_sums[:, :, 2] @ mw
    r_matches = delta * stage_sums[:, :, 1] @ mw + (1 - delta) * stage_sums[:, :, 3] @ mw
    t_wlen = delta * (t_len - t_func) + (1 - delta) * t_func
    r_wlen = delta * (r_len - r_func) + (1 - delta) * r_func
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = t_matches / t_wlen
        recall = r_matches / r_wlen
        f_mean = 1.0 / ((1 - METEOR_ALPHA) / precision + METEOR_ALPHA / recall)
        exact = (t_total == t_len) & (r_total == r_len) & (n_chunks == 1)
        frag = np.where(exact, 0.0, n_chunks / ((t_words + r_words) / 2))
        score = f_mean * (1.0 - METEOR_GAMMA * frag**METEOR_BETA)
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


# ---------------------------------------------------------------------------------------------------
# BLEU and CIDEr from per-sample statistics (for the bootstrap)

_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's BleuScorer constants


def bleu_sample_stats(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sample: testlen, closest reflen, guess[1..4], correct[1..4] (pycocoevalcap's cooking)."""
    rows = []
    for hyp, ref in zip(hyps, refs):
        cooked = cook_test(hyp, cook_refs(ref))
        reflen = min((abs(length - cooked["testlen"]), length) for length in cooked["reflen"])[1]
        rows.append([cooked["testlen"], reflen, *cooked["guess"], *cooked["correct"]])
    return np.asarray(rows, dtype=float).reshape(-1, 10)


def bleu_from_stats(stats: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Corpus BLEU-1..4 (shape (B, 4)) for each resample: BleuScorer.compute_score on summed counts."""
    totals = weights @ stats
    testlen, reflen, guess, correct = totals[:, 0], totals[:, 1], totals[:, 2:6], totals[:, 6:10]
    precisions = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=1)
    bleus = precisions ** (1.0 / np.arange(1, 5))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleus * brevity[:, None]


@dataclass
class CiderStats:
    """pycocoevalcap's CIDEr-D-free CIDEr as sparse linear algebra, so document frequencies can be
    recomputed per resample. With idf c_g >= 0, min(tf_h c, tf_r c) * tf_r c = c^2 min(tf_h, tf_r) tf_r,
    so every dot product and norm is linear in u = c^2."""

    in_refs: sparse.csr_matrix  # (N, G): n-gram g occurs in a reference of sample i
    overlap: sparse.csr_matrix  # (P*4, G): min(tf_h, tf_r) * tf_r per (hyp, ref) pair and n
    ref_sq: sparse.csr_matrix  # (P*4, G): tf_r^2
    hyp_sq: sparse.csr_matrix  # (N*4, G): tf_h^2
    pair_sample: np.ndarray  # (P,): sample of each pair
    penalty: np.ndarray  # (P,): Gaussian length penalty (sigma 6, lengths counted as bigrams, as coded)
    n_refs: np.ndarray  # (N,)

    @classmethod
    def build(cls, hyps: Sequence[str], refs: Sequence[Sequence[str]], sigma: float = 6.0) -> CiderStats:
        vocab: dict[tuple, int] = {}
        doc, over, rsq, hsq = ([], [], []), ([], [], []), ([], [], []), ([], [], [])
        pair_sample, penalty = [], []

        def col(g: tuple) -> int:
            return vocab.setdefault(g, len(vocab))

        for i, (hyp, ref_list) in enumerate(zip(hyps, refs)):
            h = precook(hyp)
            h_len = sum(c for g, c in h.items() if len(g) == 2)
            for g, c in h.items():
                _append(hsq, i * 4 + len(g) - 1, col(g), c * c)
            present = set()
            for ref in ref_list:
                p = len(pair_sample)
                r = precook(ref)
                pair_sample.append(i)
                r_len = sum(c for g, c in r.items() if len(g) == 2)
                penalty.append(math.e ** (-((h_len - r_len) ** 2) / (2 * sigma**2)))
                for g, c in r.items():
                    j = col(g)
                    present.add(j)
                    _append(rsq, p * 4 + len(g) - 1, j, c * c)
                    if g in h:
                        _append(over, p * 4 + len(g) - 1, j, min(h[g], c) * c)
            for j in present:
                _append(doc, i, j, 1.0)
        n, n_pairs, g = len(hyps), len(pair_sample), len(vocab)
        return cls(
            in_refs=_csr(doc, (n, g)),
            overlap=_csr(over, (n_pairs * 4, g)),
            ref_sq=_csr(rsq, (n_pairs * 4, g)),
            hyp_sq=_csr(hsq, (n * 4, g)),
            pair_sample=np.asarray(pair_sample, dtype=int),
            penalty=np.asarray(penalty, dtype=float),
            n_refs=np.asarray([len(r) for r in refs], dtype=float),
        )

    def scores(self, weights: np.ndarray) -> np.ndarray:
        """Corpus CIDEr for each resample (rows of weights, shape (B, N))."""
        out = np.empty(len(weights))
        for b, w in enumerate(weights):
            n_docs = w.sum()
            if n_docs <= 0:
                out[b] = np.nan
                continue
            df = self.in_refs.T @ w
            u = (np.log(n_docs) - np.log(np.maximum(1.0, df))) ** 2
            num = (self.overlap @ u).reshape(-1, 4)
            norm_r = np.sqrt(self.ref_sq @ u).reshape(-1, 4)
            norm_h = np.sqrt(self.hyp_sq @ u).reshape(-1, 4)[self.pair_sample]
            denom = norm_h * norm_r
            with np.errstate(divide="ignore", invalid="ignore"):
                sim = np.where(denom != 0, num / denom, num)
            pair_score = sim.mean(axis=1) * self.penalty
            per_sample = np.bincount(self.pair_sample, weights=pair_score, minlength=len(w))
            per_sample = 10.0 * per_sample / self.n_refs
            out[b] = (w @ per_sample) / n_docs
        return out


def _append(triplets: tuple[list, list, list], row: int, col: int, value: float) -> None:
    triplets[0].append(row)
    triplets[1].append(col)
    triplets[2].append(value)


def _csr(triplets: tuple[list, list, list], shape: tuple[int, int]) -> sparse.csr_matrix:
    rows, cols, values = triplets
    return sparse.csr_matrix((np.asarray(values, dtype=float), (rows, cols)), shape=shape)


# ---------------------------------------------------------------------------------------------------
# Corpus scores


@dataclass
class SectionScorer:
    """Per-sample statistics of one section, computed once: the point estimate and every resample
    come from them."""

    hyps: list[str]
    refs: list[list[str]]
    meteor_stats: list[str]
    bleu: np.ndarray
    rouge: np.ndarray
    cider: CiderStats

    @classmethod
    def build(
        cls, hyps: Sequence[str], refs: Sequence[Sequence[str]], meteor: MeteorScorer | None
    ) -> SectionScorer:
        hyps, refs = list(hyps), [list(r) for r in refs]
        rouge = Rouge()
        return cls(
            hyps=hyps,
            refs=refs,
            meteor_stats=meteor.stats_many(hyps, refs) if meteor else [],
            bleu=bleu_sample_stats(hyps, refs),
            rouge=np.asarray([rouge.calc_score([h], r) for h, r in zip(hyps, refs)], dtype=float),
            cider=CiderStats.build(hyps, refs),
        )

    def point(self, meteor: MeteorScorer | None) -> dict[str, float]:
        """The published-protocol figures (pycocoevalcap's own classes, and the jar's EVAL for METEOR)."""
        if not self.hyps:
            return dict.fromkeys(METRICS if meteor else [m for m in METRICS if m != "METEOR"], 0.0)
        gts = {i: r for i, r in enumerate(self.refs)}
        res = {i: [h] for i, h in enumerate(self.hyps)}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        out = {f"BLEU-{k + 1}": float(b) for k, b in enumerate(bleu)}
        if meteor:
            out["METEOR"] = meteor.corpus_score(self.meteor_stats)
        out["ROUGE-L"] = float(self.rouge.mean())
        has_ngrams = any(r.split() for refs in self.refs for r in refs)  # Cider fails on an all-empty corpus
        out["CIDEr"] = float(Cider().compute_score(gts, res)[0]) if has_ngrams else 0.0
        return out

    def resampled(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric for each resample (weights: (B, N) counts of each sample in each resample)."""
        n = weights.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {f"BLEU-{k + 1}": col for k, col in enumerate(bleu_from_stats(self.bleu, weights).T)}
            if self.meteor_stats:
                stats = np.asarray([s.split() for s in self.meteor_stats], dtype=float)
                out["METEOR"] = meteor_from_stats(stats, weights)
            out["ROUGE-L"] = (weights @ self.rouge) / n
        out["CIDEr"] = self.cider.scores(weights)
        return out


def corpus_scores(
    gts: dict, res: dict, metrics: Iterable[str] = METRICS, meteor: MeteorScorer | None = None
) -> dict[str, float]:
    """pycocoevalcap's corpus scores of res (id -> [hypothesis]) against gts (id -> [references]).

    Strings are scored as given (no tokenisation). Keys are METRICS' names ("BLEU-1".."BLEU-4", "METEOR",
    "ROUGE-L", "CIDEr"); COCO_NAMES maps them to pycocoevalcap's ("Bleu_1", ..., "ROUGE_L"). METEOR starts
    a JVM unless a running MeteorScorer is passed.
    """
    metrics = tuple(metrics)
    if gts.keys() != res.keys():
        raise InputError("corpus_scores: gts and res must have the same ids")
    ids = list(gts)
    hyps = []
    for i in ids:
        if len(res[i]) != 1:
            raise InputError(f"corpus_scores: id {i!r} must have exactly one hypothesis")
        hyps.append(res[i][0])
    own_meteor = "METEOR" in metrics and meteor is None
    if own_meteor:
        meteor = MeteorScorer()
    try:
        scorer = SectionScorer.build(hyps, [gts[i] for i in ids], meteor if "METEOR" in metrics else None)
        scores = scorer.point(meteor if "METEOR" in metrics else None)
    finally:
        if own_meteor:
            meteor.close()
    return {m: scores[m] for m in metrics}


def percentile_interval(values: np.ndarray, level: float = 0.95) -> list[float]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) counts: how often each study is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    weights = np.zeros((n_resamples, n))
    np.add.at(weights, (np.arange(n_resamples)[:, None], draws), 1.0)
    return weights


# ---------------------------------------------------------------------------------------------------
# Records -> metric card


def read_predictions(path: str | os.PathLike) -> list[dict]:
    """Read a predictions JSONL (id, prediction, reference[, study_id, images]); errors name file:line.

    Each record gets "_where" ("file:line") so later messages can point at the line.
    """
    records = []
    for line, record in iter_jsonl(path):
        where = f"{path}:{line}"
        _check_record(record, where)
        records.append({**record, "_where": where})
    if not records:
        raise InputError(f"{path}: no predictions")
    return records


def _check_record(record: dict, where: str) -> None:
    for key in ("prediction", "reference"):
        if key not in record or record[key] is None:
            raise InputError(f"{where}: missing field {key!r}")
    if not isinstance(record["prediction"], str):
        raise InputError(f"{where}: field 'prediction' must be a string")
    refs = record["reference"]
    refs = [refs] if isinstance(refs, str) else refs
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise InputError(f"{where}: field 'reference' must be a string or a non-empty list of strings")
    if not any(r.strip() for r in refs):
        raise InputError(f"{where}: field 'reference' is empty")


def _study_id(record: dict) -> str:
    if record.get("study_id") is not None:
        return str(record["study_id"])
    images = record.get("images")
    if isinstance(images, list) and images and isinstance(images[0], str):
        return study_id_from_filename(images[0])
    if record.get("id") is not None:
        return str(record["id"])
    return record["_where"]  # nothing to group by: each line is its own study


def _references(record: dict) -> list[str]:
    refs = record["reference"]
    return [refs] if isinstance(refs, str) else list(refs)


def _meteor_cut_count(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> int:
    return sum(map(meteor_cuts, hyps)) + sum(meteor_cuts(r) for ref_list in refs for r in ref_list)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in ("pycocoevalcap", "nltk", "rouge"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        versions["java"] = (out.stderr or out.stdout).splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        versions["java"] = None
    return versions


RAW_TEXT_NOTE = (
    "text raw: BLEU, ROUGE-L and CIDEr get every text exactly as given (only cut where a section heading "
    "was); METEOR's jar reads one text per line with fields split by '|||', so it gets line breaks and "
    "'|||' as spaces"
)


def score_records(
    records: list[dict],
    *,
    normalize: bool = True,
    per_image: bool = False,
    bootstrap: int = 0,
    seed: int = 0,
    legacy: bool = False,
    source: str = "",
    meteor: MeteorScorer | None = None,
    labeler: str = "offline",
    uncertain: str = "positive",
    radgraph: bool = False,
    parse: Callable[..., Sections] = parse_sections,
    radeval=None,
) -> dict:
    """Score generated reports; returns the metric card (see the README for its keys).

    records: dicts with "prediction" and "reference" (a string or a list of strings), optionally
    "study_id", "images", "id". Unless per_image, only the first line of each study (file order) is
    scored; the dropped lines are counted. Legacy scoring (the reference paper's code) always runs on
    every line. A running MeteorScorer may be passed to reuse its JVM (it is left open).
    labeler ("offline", "chexbert" or "none"), uncertain and radgraph choose the "clinical" block
    (rrg.clinical): CheXpert-14 label F1 of each study's prediction against its first reference.
    `parse` splits a text into sections (rrg.r2gen_compat passes one that keeps R2Gen's texts whole);
    it takes keep_spacing like parse_sections. radeval: an rrg.radeval.RadEvalBackend whose metrics fill
    the "radeval" block, with intervals on the same study resamples as every other block.
    """
    for i, record in enumerate(records, start=1):
        _check_record(record, record.get("_where", f"record {i}"))
    if not records:
        raise InputError(f"{source or 'records'}: no predictions to score")
    records, texts_cut = bound_records(records)  # before any scorer (or the labeler) sees a text
    if any(texts_cut.values()):
        _say(
            f"warning: {texts_cut['prediction']} prediction(s) and {texts_cut['reference']} reference(s) "
            f"cut to {SCORER_MAX_WORDS} words / {SCORER_MAX_CHARS} characters (counts.texts_cut)"
        )
    if legacy:  # fail before the slow part when WordNet is missing
        from .legacy_metrics import require_wordnet

        require_wordnet()
    from .clinical import check_backends, clinical_scores

    check_backends(labeler, radgraph, uncertain)  # a missing optional package fails before the slow part

    study_ids = [_study_id(r) for r in records]
    kept, seen = [], set()
    for record, study in zip(records, study_ids):
        if per_image or study not in seen:
            kept.append(record)
        seen.add(study)
    dropped = len(records) - len(kept)
    if dropped:
        _say(f"scoring {len(kept)} studies once each: dropped {dropped} further view(s) of the same studies")

    # Raw: every text exactly as given (only cut where a section heading was), byte for byte.
    clean = normalize_report if normalize else str
    empty_predictions = 0
    missing = {s: {"prediction": 0, "reference": 0} for s in ("findings", "impression")}
    texts = {s: ([], []) for s in SECTIONS}  # section -> (hyps, refs)
    rows = {s: [] for s in SECTIONS}  # section -> positions in `kept` of its samples (for the bootstrap)
    for i, record in enumerate(kept, start=1):
        if not record["prediction"].strip():
            empty_predictions += 1
            if empty_predictions <= 5:
                _say(f"warning: {record.get('_where', f'record {i}')}: empty prediction (scored as empty)")
        pred = parse(record["prediction"], keep_spacing=not normalize)
        refs = [parse(r, keep_spacing=not normalize) for r in _references(record)]
        texts["report"][0].append(clean(pred.body))
        texts["report"][1].append([clean(r.body) for r in refs])
        rows["report"].append(i - 1)
        for section in ("findings", "impression"):
            pred_text = getattr(pred, section)
            ref_texts = [getattr(r, section) for r in refs if getattr(r, section) is not None]
            missing[section]["prediction"] += pred_text is None
            if not ref_texts:  # nothing to compare with: the study does not count for this section
                missing[section]["reference"] += 1
                continue
            texts[section][0].append(clean(pred_text or ""))
            texts[section][1].append([clean(r) for r in ref_texts])
            rows[section].append(i - 1)
    if empty_predictions > 5:
        _say(f"warning: {empty_predictions} empty predictions in all")

    card: dict = {"metrics": {}}
    own_meteor = meteor is None
    meteor = meteor or MeteorScorer()
    try:
        scorers = {}
        for section in tqdm(SECTIONS, desc="scoring", unit="section", disable=None):
            scorers[section] = SectionScorer.build(*texts[section], meteor)
            # A section no reference has gets null figures, not zeros that would read as a score.
            card["metrics"][section] = (
                scorers[section].point(meteor) if rows[section] else dict.fromkeys(METRICS)
            )
    finally:
        if own_meteor:
            meteor.close()
    # One set of study resamples for every interval: the n-gram metrics' and the clinical block's.
    weights = resample_weights(len(kept), bootstrap, seed) if bootstrap else None
    if bootstrap:
        card["ci95"] = {}
        for section in SECTIONS:  # the same draws of studies for every section and metric
            if not rows[section]:
                card["ci95"][section] = None
                continue
            values = scorers[section].resampled(weights[:, rows[section]])
            card["ci95"][section] = {m: percentile_interval(values[m]) for m in METRICS if m in values}
    if legacy:
        from .legacy_metrics import legacy_scores

        result = legacy_scores([_references(r)[0] for r in records], [r["prediction"] for r in records])
        card["legacy"] = {**result, "per_line": True}
    if labeler != "none" or radgraph:
        card["clinical"] = clinical_scores(
            [r["prediction"] for r in kept],
            [_references(r)[0] for r in kept],
            labeler=labeler,
            uncertain=uncertain,
            radgraph=radgraph,
            weights=weights,
        )
    from .rexrank_bleu import block as rexrank_bleu

    # ReXrank's own BLEU-2 beside ours: a row placed on the leaderboard's scale needs its figure, not ours.
    card["rexrank_bleu"] = rexrank_bleu(
        [r["prediction"] for r in kept], [_references(r)[0] for r in kept], weights
    )
    if radeval is not None:
        card["radeval"] = radeval.block(
            [r["prediction"] for r in kept], [_references(r)[0] for r in kept], weights
        )
    card["counts"] = {
        "lines": len(records),
        "studies": len(set(study_ids)),
        "scored": len(kept),
        "duplicate_views_dropped": dropped,
        "empty_predictions": empty_predictions,
        "missing_findings": missing["findings"],
        "missing_impression": missing["impression"],
        "sections_scored": {s: len(texts[s][0]) for s in SECTIONS},
        "meteor_texts_cut": {s: _meteor_cut_count(*texts[s]) for s in SECTIONS},
        "texts_cut": texts_cut,
    }
    card["settings"] = {
        "normalize": normalize,
        "per_image": per_image,
        "bootstrap": bootstrap,
        "seed": seed,
        "legacy": legacy,
        "predictions": str(source),
    }
    card["notes"] = [
        "corpus-level pycocoevalcap scores; SPICE left out (needs a download)",
        "text R2Gen-normalised" if normalize else RAW_TEXT_NOTE,
        f"METEOR sees at most {METEOR_MAX_WORDS} words of a text (counts.meteor_texts_cut: texts cut)",
        f"every prediction and reference is cut to {SCORER_MAX_WORDS} words and {SCORER_MAX_CHARS} characters "
        "before scoring (counts.texts_cut: texts cut)",
        "one line per study (first in file order)" if not per_image else "every line scored (per image)",
    ]
    if bootstrap:
        card["notes"].append(
            "ci95: percentile interval over study resamples, every metric exact per resample"
        )
    if legacy:
        card["notes"].append("legacy: the reference paper's metric code, on every line (per image)")
    card["versions"] = _tool_versions()
    return card


def format_card(card: dict) -> str:
    """A small plain-text table of the card: one row per section, one column per metric (and a row of
    95% intervals under each section when the card has them)."""
    width = 13 if "ci95" in card else 9
    lines = [f"{'':<11}" + "".join(f"{m:>{width}}" for m in METRICS)]
    for section in SECTIONS:
        scores = card["metrics"].get(section, {})
        cells = ("-" if scores.get(m) is None else f"{scores[m]:.4f}" for m in METRICS)
        lines.append(f"{section:<11}" + "".join(f"{c:>{width}}" for c in cells))
        ci = card.get("ci95", {}).get(section)
        if ci:
            cells = (f"{ci[m][0]:.3f}-{ci[m][1]:.3f}" if m in ci else "" for m in METRICS)
            lines.append(f"{'  95% CI':<11}" + "".join(f"{c:>{width}}" for c in cells))
    counts = card["counts"]
    lines.append(
        f"studies scored: {counts['scored']} of {counts['lines']} lines "
        f"({counts['duplicate_views_dropped']} duplicate views dropped, {counts['empty_predictions']} empty "
        f"predictions); predictions missing findings/impression: "
        f"{counts['missing_findings']['prediction']}/{counts['missing_impression']['prediction']}"
    )
    lines.append(f"text: {'R2Gen-normalised' if card['settings']['normalize'] else 'raw'}")
    if "legacy" in card:
        legacy = card["legacy"]
        keys = list(legacy["findings"])
        lines.append("legacy (the reference paper's metric code, every line):")
        lines.append(f"{'':<11}" + "".join(f"{k:>10}" for k in keys))
        for section in ("findings", "impression"):
            lines.append(f"{section:<11}" + "".join(f"{legacy[section][k]:>10.4f}" for k in keys))
        lines.append(f"unparsed predictions: {legacy['unparsed_predictions']}")
    if card.get("rexrank_bleu", {}).get("bleu2") is not None:
        block = card["rexrank_bleu"]
        ci = f" [{block['ci95'][0]:.3f}-{block['ci95'][1]:.3f}]" if "ci95" in block else ""
        lines.append(f"ReXrank BLEU-2 (CXR-Report-Metric's, mean over studies, raw text): {block['bleu2']:.4f}{ci}")
    if "radeval" in card:
        from .radeval import format_block

        lines.append(format_block(card["radeval"]))
    if "clinical" in card:
        from .clinical import format_clinical

        lines.append(format_clinical(card["clinical"]))
    return "\n".join(lines)
