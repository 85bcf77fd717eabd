"""Atomic checkpoints and result files of a run directory."""
from __future__ import annotations

import csv
import json
import os
import shutil
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


class RunDirTaken(UserError, FileExistsError):
    """A new run was pointed at a directory that already holds a run, or other files."""


RUN_FILES = ("config.yaml", CHECKPOINT, "checkpoint_prev.pt", "metrics.csv", "metrics.json")


def check_new_run_dir(run_dir: Path, overwrite: bool = False) -> None:
    """Refuse to start a new run in ``run_dir`` when that would overwrite or mix with what is there:
    a file, a run (finished or not; ``overwrite`` removes it first), or a folder of other files."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise RunDirTaken(f"run directory {run_dir} is a file; expected a new or empty directory")
    if not any(run_dir.iterdir()):
        return
    if not any((run_dir / name).exists() for name in RUN_FILES):
        raise RunDirTaken(f"run directory {run_dir} is not empty and holds no jacinv run; expected a new or empty "
                          "directory (choose another --run-dir)")
    if overwrite:
        shutil.rmtree(run_dir)
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fallback to the previous checkpoint only changes the count shown
            state, _ = load_checkpoint(run_dir / CHECKPOINT, fallback=True)
    except (DamagedCheckpoint, FileNotFoundError):
        state = None
    done = f" ({state['epoch'] + 1} epochs trained)" if isinstance(state, dict) and "epoch" in state else ""
    raise RunDirTaken(f"run directory {run_dir} already holds a run{done}; continue it with --resume {run_dir}, "
                      "choose a new --run-dir, or add --overwrite to replace it")


class CheckpointMismatch(UserError, ValueError):
    """A checkpoint's weights do not fit the model its run's configuration builds."""


def load_weights(model: torch.nn.Module, weights: dict, checkpoint) -> None:
    """``model.load_state_dict(weights)``; a mismatch is reported as one error naming ``checkpoint``."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise CheckpointMismatch(f"checkpoint {checkpoint} does not fit the model the configuration describes (was "
                                 f"model.* or the data shape edited?): {detail}") from None
