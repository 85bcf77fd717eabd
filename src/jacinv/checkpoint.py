"""Atomic checkpoints and result files of a run directory."""
from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path

import torch

from .errors import UserError

CHECKPOINT = "checkpoint_last.pt"


class DamagedCheckpoint(UserError, ValueError):
    """A checkpoint file that cannot be read (truncated, corrupted, not a checkpoint)."""


def previous(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: checkpoint_last.pt -> checkpoint_prev.pt."""
    name = path.name.replace("_last", "_prev") if "_last" in path.name else f"{path.stem}_prev{path.suffix}"
    return path.with_name(name)


def temporary_twin(path: Path) -> Path:
    """A temporary file beside ``path`` that is this process's own (processes writing the same file
    side by side must not rename each other's half-written files), with the same suffix."""
    return path.with_name(f"{path.stem}.tmp{os.getpid()}{path.suffix}")


def atomic_torch_save(obj, path: Path) -> None:
    """Write ``obj`` to ``path`` through a temporary file; the file it replaces becomes ``previous(path)``."""
    tmp = temporary_twin(path)
    torch.save(obj, tmp)
    if path.exists():
        path.replace(previous(path))
    tmp.replace(path)


def _read(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError ... for damaged files
        detail = str(err).splitlines()[0].split(". ")[0][:160] if str(err) else ""
        raise DamagedCheckpoint(f"checkpoint {path} is damaged and cannot be read "
                                f"({type(err).__name__}{': ' + detail if detail else ''})") from err


def load_checkpoint(path: Path, fallback: bool = False) -> tuple[dict, Path]:
    """(state, the file it came from).  With ``fallback`` a damaged or missing ``path`` falls back to
    ``previous(path)`` (one save earlier; a save interrupted between its two renames leaves only that)
    with a warning; without, or when both are unusable, the error names the file."""
    prev = previous(path)
    if not path.is_file():
        if not (fallback and prev.is_file()):
            raise FileNotFoundError(f"no checkpoint at {path}; expected a run directory written by train.py")
        warnings.warn(f"no checkpoint at {path}; falling back to the previous checkpoint {prev}", stacklevel=2)
        return _read(prev), prev
    try:
        return _read(path), path
    except DamagedCheckpoint as err:
        if not (fallback and prev.is_file()):
            raise
        warnings.warn(f"{err}; falling back to the previous checkpoint {prev}", stacklevel=2)
        return _read(prev), prev


def write_json(obj, path: Path) -> None:
    tmp = temporary_twin(path)
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))  # every column, in order of appearance
    tmp = temporary_twin(path)
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
