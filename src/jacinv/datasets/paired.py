"""The paired data set (y, x, index) of an inverse problem: signals, an operator and noise."""
from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import torch
from torch.utils.data import Dataset

from .._checks import batched_tensor, choice, finite_tensor
from ..checkpoint import temporary_twin
from ..noise import DRAW_MODES, item_noise, measured_entries
from ..operators import LinearOperator
from ..transforms import Augmentation


class InverseProblemDataset(Dataset):
    """Items (y, x, index) with y = A x + n.

    Args:
        signals: float tensor (N, *operator.in_shape) with values in [0, 1].
        operator: the forward operator A.
        noise: a ``BoundedNoise`` / ``GaussianNoise`` (or None for noise-free data).
        seed: noise of item i is drawn from (seed, i) in "fixed" mode (the same every
            epoch, as in the seed paper's fixed training set) and from (seed, epoch, i) in
            "fresh" mode (call ``set_epoch``).
        cache: optional HDF5 path: "fixed" measurements are computed once and stored there
            (reused when the file matches operator, noise, seed and signals).
        augment: an ``Augmentation``: item i of epoch e is the augmented signal, drawn from (its seed, e, i),
            measured afresh (see ``with_augmentation``); None: the signals as they are.

    ``__getitems__`` makes a DataLoader fetch a whole batch with one operator call.
    """

    def __init__(self, signals: torch.Tensor, operator: LinearOperator, noise=None, seed: int = 0,
                 noise_mode: str = "fixed", cache=None, augment: Augmentation | None = None):
        if not isinstance(operator, LinearOperator):
            raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
        batched_tensor(signals, operator.in_shape, "signals")
        finite_tensor(signals, "signals")
        lo, hi = float(signals.min()), float(signals.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"signals must lie in [0, 1] (scale them first), got values in [{lo:.4g}, {hi:.4g}]")
        self.signals = signals.float().contiguous()
        self.operator = operator
        self.noise = noise
        self._entries = measured_entries(operator) if noise is not None else None   # where noise may land
        self.seed = seed
        self.noise_mode = choice(noise_mode, "noise_mode", DRAW_MODES)
        self.epoch = 0
        self._cached_y = None
        self._memo_y: torch.Tensor | None = None     # "fixed" mode: y of items already measured
        self._memo_filled = torch.zeros(len(self.signals), dtype=torch.bool)
        if augment is not None and not isinstance(augment, Augmentation):
            raise TypeError(f"augment must be an Augmentation or None, got {type(augment).__name__}")
        if augment is not None and (cache is not None or len(operator.in_shape) != 3):
            raise ValueError("augment needs image signals (C, H, W) measured afresh (no cache), got signals of shape "
                             f"{tuple(operator.in_shape)}" + (" and a cache" if cache is not None else ""))
        self.augment = augment
        if cache is not None:
            if self.noise_mode != "fixed":
                raise ValueError("cache needs noise_mode='fixed' (fresh noise changes every epoch)")
            self._cached_y = self._load_or_build_cache(Path(cache))

    def __len__(self) -> int:
        return self.signals.shape[0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def with_augmentation(self, augment: Augmentation) -> "InverseProblemDataset":
        """The same items (signals, operator, noise, seed) with ``augment`` applied: what training iterates
        over, while evaluation keeps this clean data set."""
        twin = InverseProblemDataset(self.signals, self.operator, self.noise, self.seed, self.noise_mode,
                                     augment=augment)
        twin.epoch = self.epoch
        return twin

    def _noise(self, index: torch.Tensor) -> torch.Tensor:
        shape = (len(index), *self.operator.out_shape)
        if self.noise is None:
            return torch.zeros(shape)
        return torch.stack([item_noise(self.noise, shape[1:], self.seed, i, self.noise_mode, self.epoch, self._entries)
                            for i in index])

    def measure(self, index: torch.Tensor) -> torch.Tensor:
        """y for the items ``index`` (B,), (B, *operator.out_shape)."""
        if self._cached_y is not None:
            return self._cached_y[index]
        if self.augment is not None:
            return self.pairs(index)[0]
        if self.noise_mode == "fresh":
            return self._simulate(index)
        missing = index[~self._memo_filled[index]].unique()
        if len(missing):
            y = self._simulate(missing)
            if self._memo_y is None:
                self._memo_y = y.new_empty((len(self), *y.shape[1:]))
            self._memo_y[missing] = y
            self._memo_filled[missing] = True
        return self._memo_y[index]

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        """x of the items ``index`` (B,), (B, *operator.in_shape)."""
        if self.augment is not None:
            return self.augment(self.signals[index], index, self.epoch)
        return self.signals[index]

    def pairs(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, x) of the items ``index`` (B,)."""
        if self.augment is None:
            return self.measure(index), self.signals[index]
        x = self.targets(index)
        return self._simulate(index, x), x

    def _simulate(self, index: torch.Tensor, signals: torch.Tensor | None = None) -> torch.Tensor:
        """y of the items ``index``: A x + n with x = ``signals`` (default: the stored ones)."""
        with torch.no_grad():
            return self.operator(self.signals[index] if signals is None else signals) + self._noise(index)

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        return list(zip(*self.pairs(index), index))

    def __getitem__(self, i: int):
        y, x, index = self.__getitems__([i])[0]
        return y, x, index

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(repr((self.operator, self.noise, self.seed, tuple(self.signals.shape))).encode())
        h.update(self.signals.numpy().tobytes())
        for name, buf in sorted(self.operator.named_buffers()):
            h.update(name.encode())
            h.update(buf.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def _load_or_build_cache(self, path: Path) -> torch.Tensor:
        fingerprint = self._fingerprint()
        if path.exists():
            with h5py.File(path, "r") as fh:
                if fh.attrs.get("fingerprint") == fingerprint:
                    return torch.from_numpy(fh["y"][()])
        index = torch.arange(len(self))
        y = torch.cat([self._simulate(index[k: k + 1024]) for k in range(0, len(self), 1024)])
        tmp = temporary_twin(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("y", data=y.numpy(), compression="lzf")
            fh.attrs["fingerprint"] = fingerprint
        tmp.replace(path)
        return y
