"""What a run's result depends on besides its flags: the split file, the image files its entries resolve
to, and the adapter's weights. A resume (eval's predictions, training's checkpoints) compares these with
the run it continues and refuses on any difference, naming it.

Images enter by (name -> path relative to the image folder, size, mtime_ns): one stat per image, no read.
A replaced or re-encoded image gets a new mtime, another --image_dir holds other files (or the same files
with other mtimes: a plain `cp` refuses, on the safe side; `cp -a`/`rsync -a`, the same data, resumes).
A content hash would also accept a plain copy, but reads every image (~7,000 for the training split) at
every start; the stat never lets a changed file through unless its mtime was put back on purpose.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rrg.train.checkpoints import file_sha256

# The files of an adapter folder that decide what it computes (peft's names; the paper's .bin too).
# non_lora_trainables.bin: the fully-tuned modules LLaVA's LoRA runs save beside the adapter (rrg.model.adapters).
ADAPTER_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "non_lora_trainables.bin",
)


def image_signature(path: Path | None, image_dir: str | os.PathLike) -> list | None:
    """[file relative to image_dir, size, mtime_ns] (None for an image that did not resolve)."""
    if path is None:
        return None
    stat = path.stat()
    return [os.path.relpath(path, image_dir), stat.st_size, stat.st_mtime_ns]


def images_sha256(signatures: Iterable[tuple[str, list | None]]) -> str:
    """sha256 of the (image name, signature) pairs, in the order given."""
    return hashlib.sha256(json.dumps([[name, sig] for name, sig in signatures]).encode()).hexdigest()


def adapter_sha256(lora_path: str | os.PathLike | None) -> str | None:
    """sha256 over the adapter folder's config and weight files (None without an adapter)."""
    if not lora_path:
        return None
    folder = Path(lora_path)
    if not folder.is_dir():  # a Hub id: its files are fixed by the id, as the base model's are
        return None
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        path = folder / name
        if path.is_file():
            digest.update(f"{name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def all_images_sha256(resolved: Mapping[str, Path | None], image_dir: str | os.PathLike) -> str:
    """images_sha256 of every name (sorted) a split's entries resolve to: training's fingerprint."""
    return images_sha256((name, image_signature(resolved[name], image_dir)) for name in sorted(resolved))


@dataclass(frozen=True)
class RunInputs:
    """An eval run's inputs; every prediction line records those it was made from (line_inputs)."""

    split_sha256: str
    adapter_sha256: str | None
    signatures: Mapping[str, list | None]  # image name -> image_signature

    @classmethod
    def of(
        cls,
        json_file: str | os.PathLike,
        paths: Mapping[str, Path],
        image_dir: str | os.PathLike,
        lora_path: str | os.PathLike | None,
    ) -> RunInputs:
        signatures = {name: image_signature(path, image_dir) for name, path in paths.items()}
        return cls(file_sha256(json_file), adapter_sha256(lora_path), signatures)

    def line_inputs(self, image_names: Sequence[str]) -> dict[str, str | None]:
        """{"split_sha256", "adapter_sha256", "images_sha256"} of a line generated from these images."""
        return {
            "split_sha256": self.split_sha256,
            "adapter_sha256": self.adapter_sha256,
            "images_sha256": images_sha256((n, self.signatures.get(n)) for n in image_names),
        }

    def mismatch(self, recorded: dict, image_names: Sequence[str]) -> str:
        """'' when a line's recorded inputs are this run's, else which differ ("adapter, images").
        A line whose images this run did not resolve (beyond --limit) is checked for split and adapter."""
        expected = self.line_inputs(image_names)
        if not all(n in self.signatures for n in image_names):
            expected["images_sha256"] = recorded.get("images_sha256")
        what = {"split_sha256": "split file", "adapter_sha256": "adapter weights", "images_sha256": "images"}
        return ", ".join(what[k] for k in expected if recorded.get(k) != expected[k])


def split_images_sha256(json_files: Sequence[str | os.PathLike], image_dir: str | os.PathLike) -> str:
    """all_images_sha256 of every image name the split files' entries give (training's fingerprint).

    Entries that do not parse and names that do not resolve are left to the pre-flight check, which
    names them (or skips them with --skip_bad); here a name found nowhere counts as None.
    """
    from rrg.data.entries import ImageNotFound, entry_from_record, resolve_image
    from rrg.io import InputError, read_json_records

    resolved: dict[str, Path | None] = {}
    for json_file in json_files:
        for position, record in read_json_records(json_file):
            try:
                names = entry_from_record(record, f"{json_file}: entry {position}", position).images
            except InputError:
                continue
            for name in names:
                if name not in resolved:
                    try:
                        resolved[name] = resolve_image(image_dir, name)
                    except ImageNotFound:
                        resolved[name] = None
    return all_images_sha256(resolved, image_dir)
