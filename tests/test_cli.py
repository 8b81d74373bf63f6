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
