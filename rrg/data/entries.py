"""The split-file schema: one entry = one training/evaluation sample (a study and its image(s)).

Written by data/report2json.py, read by train_lora.py and eval/. A split file is a JSON array (or
JSONL) of objects:

    id          unique entry id: the study uid, or "<uid>_<k>" when a study gives one entry per image
    study_id    IU X-Ray study uid (string); scoring counts each study once
    images      image file names, relative to the images folder (one per view, in prompt order)
    views       "Frontal" / "Lateral" per image (may be absent)
    prompt      the question text, without template or <image> (rrg.model.prompts renders those)
    indication  clinical indication or null (never the string "nan")
    comparison  the comparison line or null (report2json --comparison; in the prompt's context)
    prior_report  the previous study's report or null (no IU X-Ray study has one)
    findings    reference findings
    impression  reference impression
    response    the target text, "Findings: ... Impression: ..." (absent: an image without a report, which
                eval generates for without scoring and training refuses)

The reference paper's files ({"prompt", "input_image", "response"}) are read too: input_image becomes
images=[its file name] and study_id is taken from the file name ("1234_IM-..." is study 1234). An entry
with `input_image` (the paper's files, and our `reference` protocol's, which write it too) is marked
protocol="reference": the eval run appends the paper's eval instruction to its prompt.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from rrg.io import InputError, read_json_records

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
    comparison: str | None = None  # the study's comparison line (IU X-Ray's column), when asked for
    prior_report: str | None = None  # the previous study's report, where a dataset has one (IU X-Ray: none)
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


def _views(record: dict, where: str) -> list[str]:
    """The views field: absent/null, or a list of strings (a bare string would become its letters)."""
    views = record.get("views")
    if views is None:
        return []
    if not isinstance(views, list) or not all(isinstance(v, str) for v in views):
        raise InputError(
            f"{where}: field 'views' must be a list of strings such as [\"Frontal\"], got {views!r:.60}"
        )
    return list(views)


def _scalar_id(record: dict, key: str, where: str) -> str | None:
    """An id field as text: a string or an integer; 1.5 or True would be read as another id."""
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(f"{where}: field {key!r} must be a string or an integer, got {value!r:.60}")
    return str(value)


def check_image_name(name: str, where: str, field_name: str = "images") -> None:
    """An image name must stay inside the image folder: no absolute path, no '..' component."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or PureWindowsPath(name).drive:
        raise InputError(
            f"{where}: field {field_name!r}: {name!r} points outside the image folder "
            "(image names are relative to --image_dir, without '..')"
        )


def entry_from_record(record: dict, where: str, position: int) -> Entry:
    if "images" in record:
        images = record["images"]
        if not isinstance(images, list) or not images or not all(isinstance(x, str) and x for x in images):
            raise InputError(f"{where}: field 'images' must be a non-empty list of file names")
        field_name = "images"
    elif "input_image" in record:  # the reference paper's format
        images = [_text(record, "input_image", where, required=True)]
        field_name = "input_image"
    else:
        raise InputError(f"{where}: missing field 'images' (or the reference format's 'input_image')")
    for name in images:
        check_image_name(name, where, field_name)
    study_id = _scalar_id(record, "study_id", where)
    study_id = study_id if study_id is not None else study_id_from_filename(images[0])
    entry_id = _scalar_id(record, "id", where)
    entry_id = entry_id if entry_id is not None else f"{study_id}#{position}"
    return Entry(
        id=entry_id,
        study_id=study_id,
        images=list(images),
        prompt=_text(record, "prompt", where, required=True),
        # absent for images without a report (a user's own folder): generation only, never training
        response=_text(record, "response", where, required=False) if "response" in record else "",
        findings=_text(record, "findings", where, required=False),
        impression=_text(record, "impression", where, required=False),
        indication=_text(record, "indication", where, required=False),
        comparison=_text(record, "comparison", where, required=False),
        prior_report=_text(record, "prior_report", where, required=False),
        views=_views(record, where),
        source=where,
        protocol="reference" if "input_image" in record else None,
    )


def load_entries(path: str | os.PathLike) -> list[Entry]:
    """Read a split file; a malformed entry raises InputError naming the file and line/entry."""
    path = Path(path)
    is_array = path.is_file() and path.read_text(encoding="utf-8", errors="replace").lstrip().startswith("[")
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


class ImageNotFound(InputError):
    """An entry's image is not in the image folder (callers may count these instead of stopping)."""


def resolve_image(image_dir: str | os.PathLike, name: str, where: str = "") -> Path:
    """Find an entry's image under image_dir, whatever layout the folder has: the one place an entry's
    image name becomes a file (eval, training, the case browser).

    Accepts a name relative to image_dir, the reference's "./images/images_normalized/x.png", or a bare
    file name inside image_dir, image_dir/images_normalized or image_dir/images/images_normalized
    (the Kaggle layout). Only inside image_dir: an absolute name or one with '..' is an InputError
    (check_image_name), and the working directory is never looked in (a same-named file there would
    win over the folder). A name found nowhere raises ImageNotFound listing where it looked.
    """
    place = f"{where}: " if where else ""
    check_image_name(name, where or f"image {name!r}")
    image_dir = Path(image_dir)
    base = Path(name).name
    candidates = [
        image_dir / name,
        image_dir / f"{name}.png",  # a DICOM in a resize cache (rrg.data.image_cache)
        image_dir / base,
        image_dir / "images_normalized" / base,
        image_dir / "images" / "images_normalized" / base,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ImageNotFound(f"{place}image {name!r} not found (looked in {looked})")


def verify_image(path: Path) -> str | None:
    """None if the file decodes (rrg.data.images, the reader every stage uses), else why not (a truncated file,
    not an image, more pixels than the decompression-bomb limit): the pre-flight check of training, eval
    and the browser."""
    from rrg.data.images import image_problem

    problem = image_problem(path, quick=True)
    return f"unreadable image {problem}" if problem else None
