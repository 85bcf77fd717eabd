"""fastMRI HDF5 volumes, read lazily one slice at a time (single-coil and multi-coil)."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import choice
from ..operators.fourier import complex_abs, ifft2c

TARGETS = ("reconstruction_esc", "reconstruction_rss", "kspace")
INDEX_FILE = ".jacinv_fastmri_index.json"


def center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Crop the last two dims of ``x`` to ``shape`` around the centre."""
    h, w = x.shape[-2:]
    ch, cw = shape
    if ch > h or cw > w:
        raise ValueError(f"crop {shape} is larger than the image ({h}, {w})")
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top: top + ch, left: left + cw]


def _volume_info(path: Path) -> dict:
    with h5py.File(path, "r") as fh:
        if "kspace" not in fh:
            raise ValueError(f"fastMRI file {path} has no 'kspace' dataset; found {sorted(fh.keys())}")
        shape = fh["kspace"].shape
        if len(shape) not in (3, 4):
            raise ValueError(f"fastMRI file {path}: 'kspace' has shape {shape}; expected (slices, [coils,] H, W)")
        return {"slices": int(shape[0]), "kspace_shape": list(shape), "keys": sorted(fh.keys()),
                "attrs": {k: (v.item() if hasattr(v, "item") else str(v)) for k, v in fh.attrs.items()},
                "mtime": path.stat().st_mtime, "size": path.stat().st_size}


class FastMRISliceDataset(Dataset):
    """Slices of the fastMRI volumes under ``root``.

    Items are dicts: "kspace" (C, H, W, 2) float32 (C = 1 for single-coil files),
    "target" (1, h, w) float32 (``crop``ped), "fname", "slice", "max" (the volume's
    'max' attribute, or this slice's target maximum when the file has none), and "mask" (W,)
    for test files that carry one.

    Args:
        target: "reconstruction_esc" / "reconstruction_rss" (read from the file), or
            "kspace" (root-sum-of-squares of the inverse FFT of the fully sampled k-space).
        crop: (h, w) centre crop of the target.
        index_file: where the metadata cache lives (default ``root/.jacinv_fastmri_index.json``);
            it is reused for files whose size and mtime are unchanged, so a directory of
            thousands of volumes indexes once.
        skip_corrupt: skip unreadable files with a warning instead of failing.
    """

    def __init__(self, root, target: str = "reconstruction_esc", crop=(320, 320), index_file=None,
                 skip_corrupt: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"fastMRI directory {self.root} does not exist")
        self.target = choice(target, "target", TARGETS)
        self.crop = tuple(crop)
        files = sorted(self.root.glob("*.h5"))
        if not files:
            raise ValueError(f"fastMRI directory {self.root} holds no .h5 files")
        self.volumes = self._index(files, Path(index_file) if index_file else self.root / INDEX_FILE, skip_corrupt)
        self.items = np.array([(v, s) for v, info in enumerate(self.volumes) for s in range(info["slices"])],
                              dtype=np.int64).reshape(-1, 2)
        self._handles: dict[str, h5py.File] = {}
        self._pid = None

    def _index(self, files, index_file: Path, skip_corrupt: bool) -> list[dict]:
        cache = {}
        if index_file.exists():
            try:
                cache = json.loads(index_file.read_text())
            except (OSError, ValueError):
                cache = {}
        volumes, changed = [], False
        for path in files:
            entry = cache.get(path.name)
            stat = path.stat()
            if entry is None or entry["mtime"] != stat.st_mtime or entry["size"] != stat.st_size:
                try:
                    entry = _volume_info(path)
                except (OSError, ValueError) as err:
                    if not skip_corrupt:
                        raise ValueError(f"fastMRI file {path} cannot be indexed: {err}") from err
                    warnings.warn(f"skipping {path}: {err}", stacklevel=3)
                    continue
                cache[path.name], changed = entry, True
            if self.target != "kspace" and self.target not in entry["keys"]:
                raise ValueError(f"fastMRI file {path} has no {self.target!r} dataset (a test file?); "
                                 "use target='kspace' to compute targets from the k-space")
            volumes.append({"fname": path.name, **entry})
        if not volumes:
            raise ValueError(f"no readable fastMRI files under {self.root}")
        if changed:
            tmp = index_file.with_suffix(".tmp")
            try:
                tmp.write_text(json.dumps(cache))
                tmp.replace(index_file)
            except OSError:
                pass  # a read-only data directory: index again next time
        return volumes

    def __len__(self) -> int:
        return len(self.items)

    def _file(self, fname: str) -> h5py.File:
        """An open handle per worker process (reopened after a fork)."""
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if fname not in self._handles:
            self._handles[fname] = h5py.File(self.root / fname, "r")
        return self._handles[fname]

    def __getitem__(self, i: int) -> dict:
        v, s = (int(t) for t in self.items[i])
        info = self.volumes[v]
        fh = self._file(info["fname"])
        k = np.asarray(fh["kspace"][s])
        if k.ndim == 2:
            k = k[None]
        kspace = torch.view_as_real(torch.from_numpy(k.astype(np.complex64)))
        if self.target == "kspace":
            target = center_crop(complex_abs(ifft2c(kspace)).pow(2).sum(0).sqrt(), self.crop)[None]
            max_value = info["attrs"].get("max", float(target.max()))
        else:
            target = center_crop(torch.from_numpy(np.asarray(fh[self.target][s], dtype=np.float32)), self.crop)[None]
            max_value = info["attrs"].get("max", float(target.max()))
        item = {"kspace": kspace, "target": target, "fname": info["fname"], "slice": s, "max": float(max_value)}
        if "mask" in fh:
            item["mask"] = torch.from_numpy(np.asarray(fh["mask"], dtype=bool))
        return item
