"""(y, x, index) items of fastMRI slices, read from disk one slice at a time.

Two physics, named by ``kspace``:
  "simulated"  y = A x + n from the target x (the seed's experiments): one operator, one mask
  "measured"   y = M (k + n): the file's own k-space k, plus the noise model's draw n if one is set
               (extra noise on top of the scanner's), undersampled by the volume's mask M (drawn from
               the file name, as fastMRI's validation masks are, or the file's own 'mask')
Targets and measurements of a volume are divided by the volume's maximum, so targets lie in
[0, 1] and y stays A x-consistent.  Memory does not grow with the number of files.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import choice
from ..operators.base import LinearOperator
from ..noise import DRAW_MODES, item_noise, measured_entries
from .fastmri import FastMRISliceDataset
from .kspace import KSpaceSubsample, MeasuredKSpace
from .masks import make_mask
from .multicoil import MeasuredMultiCoilKSpace, MultiCoilKSpace

KSPACE_MODES = ("simulated", "measured")


class FastMRIPairs(Dataset):
    """Items (y, x, index) of the slices ``items`` (positions in ``slices``) of a fastMRI folder.

    Args:
        slices: the folder's lazy slice reader.
        items: (N,) positions in ``slices`` of this data set's slices.
        operator: A; a ``MeasuredKSpace`` for measured k-space (its masks come from the data).
        kspace: "simulated" or "measured" (module doc).
        mask: (acceleration, center_fraction, pattern, seed) of the per-volume masks (measured).
        noise: noise added to y (simulated k-space) or to the file's k-space before the mask (measured), drawn
            from (seed, item) -- and the epoch in "fresh" mode -- as ``InverseProblemDataset`` does, on the recorded
            positions only with its support "measured" (then its norm is that of the noise y carries); None: none.
        seed: the seed of those draws.
        noise_mode: "fixed" (one draw per item) or "fresh" (a new draw every epoch; call ``set_epoch``).
    """

    def __init__(self, slices: FastMRISliceDataset, items, operator: LinearOperator, kspace: str = "simulated",
                 mask: dict | None = None, noise=None, seed: int = 0, noise_mode: str = "fixed"):
        self.slices = slices
        self.items = torch.as_tensor(np.asarray(items), dtype=torch.long)
        self.operator = operator
        self.kspace = choice(kspace, "kspace", KSPACE_MODES)
        if self.kspace == "measured":
            if not isinstance(operator, (MeasuredKSpace, MeasuredMultiCoilKSpace)):
                raise TypeError(f"measured k-space needs a MeasuredKSpace or MeasuredMultiCoilKSpace operator, got "
                                f"{type(operator).__name__}")
        elif operator.varies_per_sample:
            raise TypeError(f"simulated k-space needs an operator with a fixed mask, got {type(operator).__name__}")
        self.mask = dict(mask or {})
        self.noise, self.seed = noise, seed
        self.noise_mode = choice(noise_mode, "noise_mode", DRAW_MODES)
        self.epoch = 0
        self._masks: dict[str, torch.Tensor] = {}
        # simulated: the entries A records, where noise may land (measured: each slice's mask, see _pair)
        self._entries = measured_entries(operator) if self.kspace == "simulated" and noise is not None else None

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the "fresh" noise draws depend on (masks stay fixed per volume)."""
        self.epoch = epoch

    def _noise(self, i: int, shape: tuple[int, ...], entries: torch.Tensor | None) -> torch.Tensor | None:
        """The noise draw of item ``i`` (``shape``; on the recorded ``entries``, see ``item_noise``), or None without
        a noise model."""
        if self.noise is None:
            return None
        return item_noise(self.noise, shape, self.seed, i, self.noise_mode, self.epoch, entries)

    @property
    def volumes(self) -> torch.Tensor:
        """(N,) the volume of each item, numbered 0, 1, ... in order of first appearance."""
        volume_of = self.slices.items[self.items.numpy(), 0]
        _, first, inverse = np.unique(volume_of, return_index=True, return_inverse=True)
        return torch.from_numpy(np.argsort(np.argsort(first))[inverse])

    def slice_keys(self) -> list[tuple[str, int]]:
        """(file name, slice number) of each item."""
        return [(self.slices.volumes[v]["fname"], int(s)) for v, s in self.slices.items[self.items.numpy()]]

    def volume_mask(self, fname: str, width: int) -> torch.Tensor:
        """(width,) bool: the sampling of a volume whose file has no mask, seeded by its name."""
        if fname not in self._masks:
            m = self.mask
            self._masks[fname] = make_mask(m["pattern"], width, m["acceleration"], m["center_fraction"], m["seed"],
                                           key=fname)
        return self._masks[fname]

    def _pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.slices[int(self.items[i])]
        scale = 1.0 / max(item["max"], 1e-12)
        x = item["target"] * scale
        if self.kspace == "simulated":
            with torch.no_grad():
                y = self.operator(x[None])[0]
            noise = self._noise(i, tuple(y.shape), self._entries)
            return (y if noise is None else y + noise), x
        kspace = item["kspace"] * scale
        mask = item.get("mask")
        if mask is None:
            mask = self.volume_mask(item["fname"], kspace.shape[-2])
        noise = self._noise(i, tuple(kspace.shape), mask.bool()[:, None])   # the columns the scanner recorded
        if noise is not None:
            kspace = kspace + noise
        return kspace * mask.to(kspace.dtype)[:, None], x

    def __getitem__(self, i: int):
        y, x = self._pair(i)
        return y, x, torch.tensor(i)

    def measure(self, index: torch.Tensor) -> torch.Tensor:
        """y of the items ``index`` (B,), (B, *operator.out_shape)."""
        return torch.stack([self._pair(int(i))[0] for i in index])

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        """x of the items ``index`` (B,), (B, *operator.in_shape)."""
        return torch.stack([self._pair(int(i))[1] for i in index])

    def pairs(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, x) of the items ``index`` (B,), read once."""
        ys, xs = zip(*(self._pair(int(i)) for i in index))
        return torch.stack(ys), torch.stack(xs)


def kspace_operator(folders, kspace: str, crop: int, op_kwargs: dict, multicoil: bool = False) -> LinearOperator:
    """The operator of a fastMRI run on ``folders`` (lazy slice readers): simulated, KSpaceSubsample (or with
    ``multicoil`` MultiCoilKSpace, ``op_kwargs`` its settings) on the (crop x crop) targets; measured, MeasuredKSpace
    (or MeasuredMultiCoilKSpace) from the targets to the files' k-space grid, which every file of every folder must
    share, as single-coil (slices, H, W) or multi-coil (slices, coils, H, W) files as asked."""
    if choice(kspace, "kspace", KSPACE_MODES) == "simulated":
        return (MultiCoilKSpace if multicoil else KSpaceSubsample)((1, crop, crop), **op_kwargs)
    shapes: dict[tuple, list[str]] = {}
    for slices in folders:
        for v, info in enumerate(slices.volumes):
            shapes.setdefault(slices.kspace_shape(v), []).append(str(slices.root / info["fname"]))
    if len(shapes) > 1:
        listing = "; ".join(f"{_described(shape)}: {len(names)} file(s), e.g. {names[0]}"
                            for shape, names in shapes.items())
        raise ValueError(f"measured k-space needs one k-space shape (and coil count) per run, found {listing}; "
                         "keep files of one shape together (or use data.kspace=simulated)")
    ((shape, names),) = shapes.items()
    if (len(shape) == 3) != multicoil:
        expected = "multi-coil (slices, coils, H, W)" if multicoil else "single-coil (slices, H, W)"
        raise ValueError(f"operator {'multicoil_kspace' if multicoil else 'kspace'} needs {expected} files; "
                         f"{names[0]} is {_described(shape)} (operator.name=multicoil_kspace for multi-coil files, "
                         "kspace for single-coil ones)")
    return MeasuredMultiCoilKSpace((1, crop, crop), shape) if multicoil else MeasuredKSpace((1, crop, crop), shape)


def _described(shape: tuple) -> str:
    """(H, W) -> "single-coil (H, W)"; (coils, H, W) -> "C coils (H, W)"."""
    return f"single-coil {shape}" if len(shape) == 2 else f"{shape[0]} coils {shape[1:]}"
