"""rrg.cli: settings dataclasses become flags whose ranges are checked as they are parsed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rrg.cli import flag, parse_flags


@dataclass
class Settings:
    lr: float = flag(2e-4, "Learning rate.", gt=0)
    batch_size: int = flag(8, "Micro-batch.", ge=1)
    dropout: float = flag(0.0, "Dropout.", ge=0, lt=1)
    name: str = flag("x", "A name.", nonempty=True)
    compile: bool = flag(True, "Compile.")


def test_defaults_and_values_parse():
    s = parse_flags(Settings, ["--lr", "1e-3", "--batch_size", "2", "--no_compile"])
    assert (s.lr, s.batch_size, s.dropout, s.name, s.compile) == (1e-3, 2, 0.0, "x", False)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--lr", "0"], "--lr must be > 0 (got 0.0)"),
        (["--lr", "nan"], "--lr must be a finite number (got nan)"),
        (["--lr", "inf"], "--lr must be a finite number (got inf)"),
        (["--batch_size", "0"], "--batch_size must be >= 1 (got 0)"),
        (["--dropout", "1.5"], "--dropout must be < 1 (got 1.5)"),
        (["--name", " "], "--name must not be empty"),
    ],
)
def test_out_of_range_is_one_line_and_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        parse_flags(Settings, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {words}"


def test_help_shows_help_and_default(capsys):
    with pytest.raises(SystemExit):
        parse_flags(Settings, ["--help"])
    out = capsys.readouterr().out
    assert "Learning rate. (default: 0.0002)" in out
    assert "--compile | --no_compile" in out


@dataclass
class Dashed:
    no_count_check: bool = flag(False, "Warn instead of failing.")
    skip_bad: bool = flag(False, "Skip.")


def test_switches_take_dashes_and_a_no_flag_turns_on():
    assert parse_flags(Dashed, ["--no-count-check", "--skip-bad"]) == Dashed(True, True)
    assert parse_flags(Dashed, ["--no_count_check", "--skip_bad", "--no-skip-bad"]) == Dashed(True, False)
    with pytest.raises(SystemExit):
        parse_flags(Dashed, ["--no_no_count_check"])


@dataclass
class WithPositionals:
    files: list[str] = flag(help="Files.", positional=True)
    limit: int = flag(3, "Limit.", ge=1)
    widths: list[int] = flag(help="Widths.", default_factory=lambda: [1], ge=1, nargs="+")


def test_positional_list_and_list_ranges(capsys):
    s = parse_flags(WithPositionals, ["a", "b", "--widths", "2", "3"])
    assert (s.files, s.limit, s.widths) == (["a", "b"], 3, [2, 3])
    with pytest.raises(SystemExit):
        parse_flags(WithPositionals, ["a", "--widths", "0"])
    assert capsys.readouterr().err.strip() == "error: --widths must be >= 1 (got 0)"
