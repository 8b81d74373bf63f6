"""METEOR through pycocoevalcap's Java scorer: one JVM, inputs it cannot misread."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence

import numpy as np
from pycocoevalcap.meteor import meteor as pycocoevalcap_meteor
from pycocoevalcap.meteor.meteor import METEOR_JAR, Meteor

from rrg.io import InputError

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
