"""Small file helpers: atomic writes, append-only JSONL, and readers whose errors name file and line.

Everything a long job writes goes through here, so a killed run never leaves a half-written file:
whole files are written to a temporary sibling and renamed into place (rename is atomic on POSIX),
and logs/predictions are appended one flushed line at a time.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """Bad user input (file, line or field). Scripts print its message as one line and exit 1."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared like any written file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def replace_dir(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> None:
    """Move a fully written folder into place, replacing an older one (checkpoints, adapters).

    The old folder is renamed aside before the new one is renamed in, so at every moment either the
    old or the new complete folder exists under a known name.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    old = final_dir.with_name(final_dir.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    if old.exists():
        shutil.rmtree(old)


def read_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes; a folder or an unreadable file raises InputError naming it."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def parse_json(text: str | bytes, path: str | os.PathLike, what: str = "JSON"):
    """json.loads whose errors (malformed, or nested too deep for the parser) name the file and line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: malformed {what} ({e.msg})") from None
    except RecursionError:
        raise InputError(f"{path}: {what} nested too deeply to read") from None


def read_text_utf8(path: str | os.PathLike) -> str:
    """A file's text; bytes that are not UTF-8 raise InputError naming the file, line and column."""
    path = Path(path)
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        line = data[line_start:].split(b"\n", 1)[0]
        raise _not_utf8(path, data.count(b"\n", 0, e.start) + 1, line, e.start - line_start) from None


def _not_utf8(path: Path, line_number: int, line: bytes, offset: int) -> InputError:
    return InputError(
        f"{path}:{line_number}: not UTF-8 text (byte 0x{line[offset]:02x} at column {offset + 1}); "
        "save the file as UTF-8"
    )


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file holding one object; missing, malformed or non-object files raise InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    data = parse_json(read_text_utf8(path), path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def is_disk_full(error: BaseException) -> bool:
    """Whether an error (or one it came from) is a write that failed for want of space."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        # torch.save's C++ writer reports it as a RuntimeError from inline_container.cc, without errno.
        if isinstance(error, RuntimeError) and any(
            words in str(error) for words in ("No space left", "PytorchStreamWriter failed", "file write failed")
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def disk_full_is_one_line(folder: str | os.PathLike) -> Iterator[None]:
    """Turn a write that ran out of space inside the block into one InputError line naming the folder.

    Nothing written before is lost (checkpoints and whole files are atomic, logs and predictions
    append-only), so the run continues where it stopped once there is space.
    """
    try:
        yield
    except (OSError, RuntimeError) as e:
        if not is_disk_full(e):
            raise
        raise InputError(f"{folder}: no space left on the device; free space, then --resume") from None


def append_jsonl(path: str | os.PathLike, *records: dict) -> None:
    """Append records, one line each, in one write, and flush them to disk: a killed run keeps every
    line written before. Pass a batch's records together: one fsync for the batch, not one per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
        f.flush()
        os.fsync(f.fileno())


def iter_jsonl(
    path: str | os.PathLike, *, allow_partial_last_line: bool = False
) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, record) for each non-blank line; a malformed line raises InputError naming it.

    With allow_partial_last_line, a final line without its newline that does not parse (the line a
    killed writer left half-written) is skipped with a warning instead, so --resume can continue.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    lines = read_bytes(path).split(b"\n")
    for i, raw in enumerate(lines, start=1):
        is_last = i == len(lines)  # no trailing newline after it
        try:
            line = raw.decode("utf-8")
            if not line.strip():
                continue
            record = json.loads(line)
        except RecursionError:
            raise InputError(f"{path}:{i}: JSON line nested too deeply to read") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if allow_partial_last_line and is_last:
                print(f"warning: {path}:{i}: ignoring a partly written last line")
                return
            if isinstance(e, UnicodeDecodeError):
                raise _not_utf8(path, i, raw, e.start) from None
            raise InputError(f"{path}:{i}: malformed JSON line ({e.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}:{i}: expected a JSON object, got {type(record).__name__}")
        yield i, record


def read_jsonl(path: str | os.PathLike, **kwargs: Any) -> list[dict]:
    return [record for _, record in iter_jsonl(path, **kwargs)]


def read_json_records(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """Read a list of JSON objects from a JSON array file or a JSONL file.

    Returns (position, record) pairs: the 1-based entry index for an array file (error messages say
    "entry N") or the line number for JSONL (they say "line N").
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    text = read_text_utf8(path)
    if text.lstrip().startswith("["):
        data = parse_json(text, path)
        out = []
        for i, record in enumerate(data, start=1):
            if not isinstance(record, dict):
                raise InputError(f"{path}: entry {i}: expected a JSON object, got {type(record).__name__}")
            out.append((i, record))
        return out
    return list(iter_jsonl(path))
