"""A training run's folder: its checkpoints, and what starting, resuming or overwriting does to it.

checkpoints/step-XXXXXX/ holds the adapter, optimizer.pt (AdamW's state and the fp32 master weights; one
file per rank under ZeRO/FSDP), scheduler.pt, rng.pt (one per rank) and state.json, written last:

    {"format": 2, "state": TrainState, "fingerprint": {"digest", "settings"}, "files": {name: sha256},
     "checksum": sha256 of the rest}

A checkpoint is written into a hidden folder that is renamed into place once complete, so a run killed
mid-save leaves the previous one intact. The checksums catch what the rename cannot: a disk, copy or
editor that truncates or flips bytes. `--resume` verifies them and falls back to the previous intact
checkpoint with a warning. The fingerprint (the settings that change the result: train_lora.py decides
which) is also kept in train_config.json; resuming a checkpoint of other settings is refused, naming them,
and only checkpoints with this run's fingerprint are ever rotated away.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from rrg.io import InputError, atomic_write_json, atomic_write_text, read_json_object, read_jsonl, replace_dir

FORMAT = 2  # format 1 (no "format" key): state.json held the TrainState alone, no checksums or fingerprint
CHECKPOINT_RE = re.compile(r"^step-(\d+)$")
# What train_lora.py writes into its output folder (--overwrite removes exactly these; .lock stays).
RUN_FILES = ("train_config.json", "train_log.jsonl", "checkpoints", "best", "final", "tensorboard")
RUN_LEFTOVERS = (".best.tmp", ".final.tmp", "best.old", "final.old")  # of a run killed mid-save


class CorruptCheckpoint(InputError):
    """A checkpoint whose files do not match their checksums, or cannot be read."""


@dataclass
class TrainState:
    """Where training stands; saved in each checkpoint's state.json."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batches_done: int = 0  # micro-batches of this epoch consumed by each rank
    seed: int = 0  # the sampler's seed: epoch e's order is a function of (seed, e)
    best_val_loss: float | None = None
    elapsed_s: float = 0.0
    samples_seen: int = 0
    skipped_entries: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict) -> TrainState:
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})


# --------------------------------------------------------------------------- hashes and fingerprints


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def json_sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def fingerprint(settings: dict) -> dict:
    """{"digest", "settings"}: the settings that change a run's result, and their hash."""
    return {"digest": json_sha256(settings), "settings": settings}


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Fingerprint keys added after runs had been started (train_lora.run_fingerprint's images_sha256): a run whose
# fingerprint lacks one still resumes, unchecked for that key (check_fingerprint says so).
FINGERPRINTED_LATER = ("images_sha256",)


def check_fingerprint(
    found: dict | None,
    expected: dict,
    where: str | os.PathLike,
    added_later: tuple[str, ...] = FINGERPRINTED_LATER,
) -> None:
    """InputError naming the settings that differ between `found` (a checkpoint's or train_config.json's)
    and this run's `expected` fingerprint. A key of `added_later` that `found` lacks (it was written before
    the key was fingerprinted) is left out of the comparison, with a warning that it was not checked."""
    if found is None:
        raise InputError(
            f"{where}: written by an older train_lora.py, without the fingerprint of its settings, so it cannot "
            "be checked against this run; start over with --overwrite"
        )
    absent = [k for k in added_later if k in expected["settings"] and k not in found.get("settings", {})]
    if absent:
        print(f"warning: {where}: written before {', '.join(absent)} entered the fingerprint: not checked")
        expected = fingerprint({k: v for k, v in expected["settings"].items() if k not in absent})
    if found.get("digest") == expected["digest"]:
        return
    old, new = found.get("settings", {}), expected["settings"]
    differing = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    changes = ", ".join(f"{k} {short(old.get(k))} -> {short(new.get(k))}" for k in differing[:6])
    raise InputError(
        f"{where}: belongs to a run with other settings ({changes}); continue it with its own settings, "
        "or start over with --overwrite"
    )


def check_run_config(output_dir: str | os.PathLike, expected: dict) -> None:
    """The previous run's train_config.json (if any) must carry this run's fingerprint."""
    path = Path(output_dir) / "train_config.json"
    if path.exists():
        check_fingerprint(read_json_object(path).get("fingerprint"), expected, path)


# --------------------------------------------------------------------------- the run folder


def previous_run(output_dir: str | os.PathLike) -> list[str]:
    """The names of RUN_FILES present in output_dir: a previous run's files."""
    return [name for name in RUN_FILES if (Path(output_dir) / name).exists()]


def clear_run(output_dir: str | os.PathLike) -> None:
    """Remove what train_lora.py writes into output_dir (RUN_FILES and half-saved leftovers), nothing else."""
    for name in RUN_FILES + RUN_LEFTOVERS:
        path = Path(output_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def truncate_log(log_path: str | os.PathLike, step: int) -> None:
    """On resume, drop what the killed run logged after the checkpoint's step (those steps run again),
    and its `skipped` line (the resumed run writes its own)."""
    log_path = Path(log_path)
    if not log_path.exists():
        return
    records = [
        r
        for r in read_jsonl(log_path, allow_partial_last_line=True)
        if r.get("type") != "skipped" and r.get("step", 0) <= step
    ]
    atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in records))


# --------------------------------------------------------------------------- finding checkpoints


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def checkpoint_step(path: Path) -> int:
    return int(CHECKPOINT_RE.match(path.name).group(1))


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """Every checkpoints/step-* folder, complete or damaged, oldest first."""
    folder = Path(output_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_RE.match(p.name)), key=checkpoint_step
    )


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints with their state.json (written last), oldest first; not verified."""
    return [p for p in checkpoint_folders(output_dir) if (p / "state.json").is_file()]


def read_record(path: str | os.PathLike) -> dict:
    """A checkpoint's state.json as {"state", "fingerprint", "files"}; CorruptCheckpoint if unreadable.

    A format-1 state.json (older train_lora.py) comes back with fingerprint and files None."""
    path = Path(path)
    state_file = path / "state.json"
    try:
        record = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{path}: incomplete checkpoint (no state.json)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpoint(f"{state_file}: damaged ({type(e).__name__}: {e})") from None
    if not isinstance(record, dict):
        raise CorruptCheckpoint(f"{state_file}: damaged (not a JSON object)")
    if "format" not in record and "step" in record:
        return {"state": record, "fingerprint": None, "files": None}
    checksum = record.pop("checksum", None)
    if checksum != json_sha256(record) or not {"state", "fingerprint", "files"} <= set(record):
        raise CorruptCheckpoint(f"{state_file}: damaged (its checksum does not match its content)")
    return record


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """read_record, and every file listed in state.json present with its sha256; else CorruptCheckpoint."""
    path = Path(path)
    record = read_record(path)
    for name, digest in (record["files"] or {}).items():
        file = path / name
        if not file.is_file():
            raise CorruptCheckpoint(f"{file}: missing from the checkpoint")
        if file_sha256(file) != digest:
            raise CorruptCheckpoint(f"{file}: damaged (sha256 differs from the one saved with it)")
    return record


def find_checkpoint(resume: str, output_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """The checkpoint `--resume` names, verified, with its record; None when there is nothing to resume.

    `latest`: the newest intact checkpoint of output_dir; damaged newer ones are named in a warning and
    skipped; InputError if every one is damaged. A path: that checkpoint, or InputError if it is damaged.
    """
    if not resume:
        return None
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise InputError(f"{path}: not a checkpoint folder")
        return path, verify_checkpoint(path)
    folders = checkpoint_folders(output_dir)
    for i, folder in enumerate(reversed(folders)):
        try:
            return folder, verify_checkpoint(folder)
        except CorruptCheckpoint as e:
            left = len(folders) - i - 1
            then = "falling back to the previous checkpoint" if left else "no earlier checkpoint"
            print(f"warning: {e}; {then}", file=sys.stderr)
    if folders:
        raise InputError(
            f"{folders[-1]}: damaged, and no earlier intact checkpoint in {folders[-1].parent} "
            "(warnings above); start over with --overwrite"
        )
    return None


# --------------------------------------------------------------------------- saving and loading


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),  # (version, 625 ints, gauss): stored as plain lists
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        # numpy's state holds an ndarray, which weights_only loading refuses: store it as a list.
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def optimizer_is_sharded(accelerator) -> bool:
    """ZeRO and FSDP keep a different optimizer shard on each rank: each rank saves its own."""
    return accelerator.distributed_type.name in ("DEEPSPEED", "FSDP")


def save_adapter(model, out_dir: str | os.PathLike, accelerator) -> None:
    """Write a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) from the main rank."""
    state_dict = accelerator.get_state_dict(model)  # gathers FSDP/ZeRO-3 shards; a no-op for DDP
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(str(out_dir), state_dict=state_dict)


def save_final_adapter(model, out_dir: str | os.PathLike, accelerator) -> None:
    """Write an adapter folder atomically (tmp folder, then rename over the old one)."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    save_adapter(model, tmp, accelerator)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(tmp, out_dir)
    accelerator.wait_for_everyone()


def rotate_checkpoints(output_dir: str | os.PathLike, keep: int, digest: str, up_to_step: int) -> None:
    """Delete all but the newest `keep` checkpoints of this run (its fingerprint digest) up to its current
    step. Another run's checkpoints, whatever their step numbers, and damaged ones are left alone."""
    own = []
    for folder in list_checkpoints(output_dir):
        if checkpoint_step(folder) > up_to_step:
            continue
        try:
            if (read_record(folder)["fingerprint"] or {}).get("digest") == digest:
                own.append(folder)
        except CorruptCheckpoint:
            continue
    for old in own[:-keep]:
        shutil.rmtree(old)


def save_checkpoint(
    output_dir: str | os.PathLike,
    model,
    optimizer,
    scheduler,
    state: TrainState,
    accelerator,
    run_fingerprint: dict,
    keep: int = 0,
) -> Path:
    """checkpoints/step-XXXXXX/ (see the module docstring), written atomically; keep > 0 then deletes
    all but the newest `keep` of this run's checkpoints."""
    final = Path(output_dir) / "checkpoints" / checkpoint_name(state.step)
    tmp = final.with_name(f".{final.name}.tmp")
    rank = accelerator.process_index
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_adapter(model, tmp, accelerator)
    if optimizer_is_sharded(accelerator):
        torch.save(optimizer.state_dict(), tmp / f"optimizer-rank{rank}.pt")
    elif accelerator.is_main_process:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / ("rng.pt" if rank == 0 else f"rng-rank{rank}.pt"))
    if accelerator.is_main_process:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = {f.name: file_sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        record = {"format": FORMAT, "state": state.to_json(), "fingerprint": run_fingerprint, "files": files}
        atomic_write_json(tmp / "state.json", {**record, "checksum": json_sha256(record)})  # last: complete
        replace_dir(tmp, final)
        if keep > 0:
            rotate_checkpoints(output_dir, keep, run_fingerprint["digest"], state.step)
    accelerator.wait_for_everyone()
    return final


def load_peft_weights(model, weights: dict, path: Path) -> None:
    """Load a checkpoint's adapter weights into the peft model, every LoRA weight or an InputError."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, weights)
    not_loaded = [k for k in result.missing_keys if ".lora_" in k]
    if result.unexpected_keys or not_loaded:
        raise InputError(
            f"{path}: adapter weights do not fit this model: unused {result.unexpected_keys[:3]}, "
            f"missing {not_loaded[:3]}"
        )


def load_checkpoint(path: str | os.PathLike, model, optimizer, scheduler, accelerator) -> TrainState:
    """Restore adapter weights, optimizer (with the master weights), scheduler and RNG states; return the
    TrainState. The caller verified the checksums (find_checkpoint); a file that still cannot be read is
    an InputError naming the checkpoint, not a library traceback."""
    from safetensors.torch import load_file

    path = Path(path)
    rank = accelerator.process_index
    opt_file = path / (f"optimizer-rank{rank}.pt" if optimizer_is_sharded(accelerator) else "optimizer.pt")
    rng_file = path / ("rng.pt" if rank == 0 else f"rng-rank{rank}.pt")
    unwrapped = accelerator.unwrap_model(model)
    current = path / getattr(unwrapped, "weights_file", "adapter_model.safetensors")  # align: the projector
    try:
        weights = load_file(str(current))
        current = opt_file
        optimizer_state = torch.load(opt_file, map_location="cpu", weights_only=True)
        current = path / "scheduler.pt"
        scheduler_state = torch.load(current, weights_only=True)
        current = rng_file
        rng = torch.load(rng_file, weights_only=True) if rng_file.exists() else None
    except Exception as e:  # noqa: BLE001 - safetensors, pickle and zip errors all mean "damaged file"
        raise CorruptCheckpoint(
            f"{current}: cannot read this checkpoint file ({type(e).__name__}: {e})"
        ) from None
    if hasattr(unwrapped, "load_weights"):  # rrg.train.align.ProjectorStage: the projector alone, no peft
        unwrapped.load_weights(weights, path)
    else:
        load_peft_weights(unwrapped, weights, path)
    try:
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
    except (ValueError, KeyError) as e:
        raise InputError(f"{path}: optimizer or scheduler state does not fit this run ({e})") from None
    if rng is not None:
        set_rng_state(rng)
    return TrainState.from_json(read_record(path)["state"])
