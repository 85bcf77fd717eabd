"""Reconstructions written in fastMRI's submission format."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from ..config import ConfigError


class ReconstructionWriter:
    """fastMRI's submission format: one HDF5 file per volume (named after its source file, else
    volume<k>.h5) holding 'reconstruction' (slices, h, w) in the units of the source targets (the
    normalised prediction times the volume's maximum)."""

    def __init__(self, folder, dataset):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--save-reconstructions {folder}: the folder cannot be made ({err.strerror}); expected "
                              "a new or existing directory") from None
        self.names, self.scales = None, None
        if hasattr(dataset, "slice_keys"):
            self.names = [fname for fname, _ in dataset.slice_keys()]
            self.scales = [dataset.slices.volume_max(int(dataset.slices.items[int(i), 0])) for i in dataset.items]
        self.pending: dict[str, list] = {}
        self.written: list[Path] = []

    def add(self, index: torch.Tensor, pred: torch.Tensor, volumes: torch.Tensor) -> None:
        for i, p, v in zip(index.tolist(), pred, volumes.tolist()):
            name = self.names[i] if self.names else f"volume{v:03d}.h5"
            if self.pending and name not in self.pending:
                self.flush()
            self.pending.setdefault(name, []).append((p[0] * (self.scales[i] if self.scales else 1.0)).numpy())

    def flush(self) -> None:
        for name, slices in self.pending.items():
            path = self.folder / name
            with h5py.File(path, "w") as fh:
                fh.create_dataset("reconstruction", data=np.stack(slices).astype(np.float32))
            self.written.append(path)
        self.pending = {}
