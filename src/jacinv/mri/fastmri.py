"""fastMRI HDF5 volumes, read lazily one slice at a time (single-coil and multi-coil)."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import choice, positive_int
from ..operators.fourier import center_crop, complex_abs, ifft2c

TARGETS = ("reconstruction_esc", "reconstruction_rss", "kspace")
INDEX_FILE = ".jacinv_fastmri_index.json"
OPEN_FILES = 8  # HDF5 handles kept open per process


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
    'max' attribute, or the maximum of its targets when the file has none), and "mask" (W,)
    for files that carry one (challenge and test files: their k-space is already undersampled).

    Args:
        target: "reconstruction_esc" / "reconstruction_rss" (read from the file), "kspace"
            (root-sum-of-squares of the inverse FFT of the fully sampled k-space), or "auto" (the
            first of those every file holds).
        crop: (h, w) centre crop of the target.
        index_file: where the metadata cache lives (default ``root/.jacinv_fastmri_index.json``, or
            for a read-only folder ``$XDG_CACHE_HOME/jacinv/fastmri/<hash of root>.json``); it is
            reused for files whose size and mtime are unchanged, so a folder of thousands of
            volumes indexes once.
        skip_corrupt: skip unreadable files with a warning instead of failing.
        virtual_coils: compress each multi-coil slice to this many virtual coils (``compress_coils``); every
            file must then have at least that many coils.
    """

    def __init__(self, root, target: str = "reconstruction_esc", crop=(320, 320), index_file=None,
                 skip_corrupt: bool = False, virtual_coils: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"fastMRI directory {self.root} does not exist")
        self.target = choice(target, "target", ("auto", *TARGETS))
        self.crop = tuple(crop)
        files = sorted(self.root.glob("*.h5"))
        if not files:
            raise ValueError(f"fastMRI directory {self.root} holds no .h5 files")
        self.volumes = self._index(files, Path(index_file) if index_file else None, skip_corrupt)
        self.virtual_coils = None if virtual_coils is None else positive_int(virtual_coils, "virtual_coils")
        if self.virtual_coils is not None:
            for info in self.volumes:
                shape = info["kspace_shape"]
                if len(shape) != 4 or shape[1] < self.virtual_coils:
                    coils = "single-coil" if len(shape) != 4 else f"{shape[1]} coils"
                    raise ValueError(f"virtual_coils={self.virtual_coils} compresses multi-coil files of at least that "
                                     f"many coils; {self.root / info['fname']} is {coils}")
        if self.target == "auto":
            self.target = next((t for t in TARGETS[:2] if all(t in v["keys"] for v in self.volumes)), "kspace")
        self.items = np.array([(v, s) for v, info in enumerate(self.volumes) for s in range(info["slices"])],
                              dtype=np.int64).reshape(-1, 2)
        self._handles: OrderedDict[str, h5py.File] = OrderedDict()
        self._maxima: dict[int, float] = {}
        self._pid = None

    def _index_files(self) -> list[Path]:
        """Where the index may live: in the data folder, else (read-only folders) in the user's cache."""
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        key = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:16]
        return [self.root / INDEX_FILE, cache_home / "jacinv" / "fastmri" / f"{key}.json"]

    def _index(self, files, index_file: Path | None, skip_corrupt: bool) -> list[dict]:
        places = [index_file] if index_file is not None else self._index_files()
        cache = {}
        for place in places:
            try:
                cache = json.loads(place.read_text())
                break
            except (OSError, ValueError):
                continue
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
            if self.target not in ("kspace", "auto") and self.target not in entry["keys"]:
                raise ValueError(f"fastMRI file {path} has no {self.target!r} dataset (a test file?); "
                                 "use target='kspace' to compute targets from the k-space")
            volumes.append({"fname": path.name, **entry})
        if not volumes:
            raise ValueError(f"no readable fastMRI files under {self.root}")
        if changed:
            for place in places:
                try:
                    place.parent.mkdir(parents=True, exist_ok=True)
                    tmp = place.with_suffix(f".tmp{os.getpid()}")
                    tmp.write_text(json.dumps(cache))
                    tmp.replace(place)
                    break
                except OSError:
                    continue  # a read-only data folder: the user's cache next
        return volumes

    def __len__(self) -> int:
        return len(self.items)

    def _file(self, fname: str) -> h5py.File:
        """An open handle per worker process (reopened after a fork); the ``OPEN_FILES`` most recently
        used stay open, so memory (HDF5 chunk caches) does not grow with the number of files."""
        if self._pid != os.getpid():
            self._handles, self._pid = OrderedDict(), os.getpid()
        if fname in self._handles:
            self._handles.move_to_end(fname)
        else:
            if len(self._handles) >= OPEN_FILES:
                self._handles.popitem(last=False)[1].close()
            self._handles[fname] = h5py.File(self.root / fname, "r")
        return self._handles[fname]

    def _target(self, fh: h5py.File, kspace: torch.Tensor, s: int) -> torch.Tensor:
        """(1, h, w) target of slice s: the file's reconstruction, or the RSS of F^-1 kspace; centre-cropped."""
        if self.target == "kspace":
            return center_crop(complex_abs(ifft2c(kspace)).pow(2).sum(0).sqrt(), self.crop)[None]
        return center_crop(torch.from_numpy(np.asarray(fh[self.target][s], dtype=np.float32)), self.crop)[None]

    def kspace_shape(self, v: int) -> tuple[int, ...]:
        """The per-slice k-space shape items of volume v have: (H, W) single-coil, (coils, H, W) multi-coil (the
        virtual coils when compressing)."""
        shape = tuple(self.volumes[v]["kspace_shape"][1:])
        return shape if self.virtual_coils is None else (self.virtual_coils, *shape[1:])

    def volume_max(self, v: int) -> float:
        """The maximum of volume v's targets: the file's 'max' attribute, else computed once (all its slices)."""
        info = self.volumes[v]
        if "max" in info["attrs"]:
            return float(info["attrs"]["max"])
        if v not in self._maxima:
            fh = self._file(info["fname"])
            kspace = torch.view_as_real(torch.from_numpy(np.asarray(fh["kspace"][()]).astype(np.complex64)))
            kspace = kspace if kspace.dim() == 5 else kspace[:, None]
            self._maxima[v] = max(float(self._target(fh, kspace[s], s).max()) for s in range(info["slices"]))
        return self._maxima[v]

    def __getitem__(self, i: int) -> dict:
        v, s = (int(t) for t in self.items[i])
        info = self.volumes[v]
        fh = self._file(info["fname"])
        k = np.asarray(fh["kspace"][s])
        if k.ndim == 2:
            k = k[None]
        kspace = torch.view_as_real(torch.from_numpy(k.astype(np.complex64)))
        if self.virtual_coils is not None:
            kspace = compress_coils(kspace, self.virtual_coils)
        target = self._target(fh, kspace, s)
        item = {"kspace": kspace, "target": target, "fname": info["fname"], "slice": s, "max": self.volume_max(v)}
        if "mask" in fh:
            item["mask"] = torch.from_numpy(np.asarray(fh["mask"], dtype=bool))
        return item


def compress_coils(kspace: torch.Tensor, coils: int) -> torch.Tensor:
    """Coil compression by SVD: k-space (C, H, W, 2) of C coils -> (coils, H, W, 2), the ``coils`` combinations
    U^H k along the top left singular vectors U of the (C, H W) coil matrix, which keep the most signal energy
    of any ``coils`` linear combinations (the sum of the squared singular values kept).  Linear and the same in
    k-space and image space, so masks (zero columns) and the root-sum-of-squares of what is kept carry over."""
    z = torch.view_as_complex(kspace.contiguous()).reshape(kspace.shape[0], -1)       # (C, H W)
    u, _, _ = torch.linalg.svd(z @ z.conj().T)                                          # C x C, Hermitian
    compressed = u[:, :coils].conj().T @ z
    return torch.view_as_real(compressed.reshape(coils, *kspace.shape[1:3]).contiguous())
