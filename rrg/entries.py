"""The split-file schema: one entry = one training/evaluation sample (a study and its image(s)).

Written by data/report2json.py, read by train_lora.py and eval/. A split file is a JSON array (or
JSONL) of objects:

    id          unique entry id: the study uid, or "<uid>_<k>" when a study gives one entry per image
    study_id    IU X-Ray study uid (string); scoring counts each study once
    images      image file names, relative to the images folder (one per view, in prompt order)
    views       "Frontal" / "Lateral" per image (may be absent)
    prompt      the question text, without template or <image> (rrg.prompts renders those)
    indication  clinical indication or null (never the string "nan")
    findings    reference findings
    impression  reference impression
    response    the target text, "Findings: ... Impression: ..."

The reference paper's files ({"prompt", "input_image", "response"}) are read too: input_image becomes
images=[its file name] and study_id is taken from the file name ("1234_IM-..." is study 1234). An entry
with `input_image` (the paper's files, and our `reference` protocol's, which write it too) is marked
protocol="reference": the eval run appends the paper's eval instruction to its prompt.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .io import InputError, read_json_records

# The default --image_dir of training, eval and the plots: data/download.py links it to its images
# folder (the reference paper's name; resolve_image also looks in its images_normalized/).
DEFAULT_IMAGE_DIR = "data/images"


@dataclass
class Entry:
    id: str
    study_id: str
    images: list[str]
    prompt: str
    response: str
    findings: str | None = None
    impression: str | None = None
    indication: str | None = None
    views: list[str] = field(default_factory=list)
    source: str = ""  # "file:line" or "file: entry N", for error messages; not written
    # "reference" for an entry of the reference paper's shape (it has `input_image`: the paper's own
    # files and our reference protocol's), whose eval prompt gets the paper's instruction; not written
    protocol: str | None = None

    def to_json(self) -> dict:
        record = asdict(self)
        record.pop("source")
        record.pop("protocol")
        return record


def study_id_from_filename(name: str) -> str:
    """IU X-Ray file names start with the study uid: "1234_IM-0001-4001.dcm.png", "CXR1234_IM-0001-4001.png"."""
    stem = Path(name).name
    head = stem.split("_", 1)[0]
    return head[3:] if head.upper().startswith("CXR") else head


def _text(record: dict, key: str, where: str, required: bool) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise InputError(f"{where}: missing field {key!r}")
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InputError(f"{where}: field {key!r} is empty")
    return value


def entry_from_record(record: dict, where: str, position: int) -> Entry:
    if "images" in record:
        images = record["images"]
        if not isinstance(images, list) or not images or not all(isinstance(x, str) and x for x in images):
            raise InputError(f"{where}: field 'images' must be a non-empty list of file names")
    elif "input_image" in record:  # the reference paper's format
        images = [_text(record, "input_image", where, required=True)]
    else:
        raise InputError(f"{where}: missing field 'images' (or the reference format's 'input_image')")
    study_id = record.get("study_id")
    study_id = str(study_id) if study_id is not None else study_id_from_filename(images[0])
    entry_id = record.get("id")
    entry_id = str(entry_id) if entry_id is not None else f"{study_id}#{position}"
    return Entry(
        id=entry_id,
        study_id=study_id,
        images=list(images),
        prompt=_text(record, "prompt", where, required=True),
        response=_text(record, "response", where, required=True),
        findings=_text(record, "findings", where, required=False),
        impression=_text(record, "impression", where, required=False),
        indication=_text(record, "indication", where, required=False),
        views=list(record.get("views") or []),
        source=where,
        protocol="reference" if "input_image" in record else None,
    )


def load_entries(path: str | os.PathLike) -> list[Entry]:
    """Read a split file; a malformed entry raises InputError naming the file and line/entry."""
    path = Path(path)
    is_array = path.exists() and path.read_text(encoding="utf-8", errors="replace").lstrip().startswith("[")
    entries = []
    for position, record in read_json_records(path):
        where = f"{path}: entry {position}" if is_array else f"{path}:{position}"
        entries.append(entry_from_record(record, where, position))
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.id in seen:
            raise InputError(f"{entry.source}: duplicate id {entry.id!r} (first at {seen[entry.id]})")
        seen[entry.id] = entry.source
    return entries


def resolve_image(image_dir: str | os.PathLike, name: str) -> Path:
    """Find an entry's image under image_dir, whatever layout the folder has.

    Accepts a name relative to image_dir, the reference's "./images/images_normalized/x.png", or a bare
    file name inside image_dir, image_dir/images_normalized or image_dir/images/images_normalized
    (the Kaggle layout). Raises InputError listing where it looked.
    """
    image_dir = Path(image_dir)
    base = Path(name).name
    candidates = [
        Path(name),
        image_dir / name,
        image_dir / base,
        image_dir / "images_normalized" / base,
        image_dir / "images" / "images_normalized" / base,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates[1:]))
    raise InputError(f"image {name!r} not found (looked in {looked})")
