"""Column (phase-encoding) sampling masks for Cartesian MRI, and the column sampling k-space operators share.

Each mask function owns no global state: a mask is a pure function of
(pattern, width, acceleration, center_fraction, seed, key), where ``key`` is any
string such as a volume name (every slice of a volume then shares its mask) and,
only when a run asks for it, a rank suffix so that torchrun ranks draw differently.
"""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import torch

from .._checks import choice, finite_number, positive_int

PATTERNS = ("random", "equispaced", "equispaced_fraction", "magic")


def _rng(seed: int, key: str | None) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{'' if key is None else key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def center_columns(width: int, center_fraction: float) -> np.ndarray:
    """Indices of the round(width * center_fraction) fully sampled central columns (at least 1)."""
    n_low = max(1, int(round(width * center_fraction)))
    start = (width - n_low + 1) // 2
    return np.arange(start, start + n_low)


def make_mask(pattern: str, width: int, acceleration: float, center_fraction: float,
              seed: int = 0, key: str | None = None) -> torch.Tensor:
    """A boolean column mask of shape (width,).

    "random": the centre columns plus every other column kept independently with the
    probability that makes width / acceleration columns in expectation.
    "equispaced": the centre columns plus equally spaced others, exactly
    round(width / acceleration) columns in all, with a random offset.
    "equispaced_fraction" (fastMRI's family of that name): the centre columns plus every column at
    round(offset + k s) for k = 0, 1, ..., at the spacing s = acceleration (n_low - width) / (n_low acceleration
    - width) that makes the whole a fraction of about 1 / acceleration, the offset random in [0, round(s)).
    "magic" (fastMRI's, after Defazio 2019's offset sampling): the centre columns plus columns every
    ``acceleration`` on each side of the centre, the negative frequencies' offset one column away from the
    mirror of the positive ones', so that with the Hermitian symmetry of a real image's spectrum no column repeats
    another's information; offset random.  ``acceleration`` must be an integer here.
    ``acceleration`` is the effective one (width / number of sampled columns) for random and equispaced.
    """
    choice(pattern, "pattern", PATTERNS)
    positive_int(width, "width")
    acceleration = finite_number(acceleration, "acceleration", low=1.0)
    center_fraction = finite_number(center_fraction, "center_fraction", low=0.0, high=1.0,
                                    low_open=True, high_open=True)
    positive_int(seed, "seed", minimum=0)
    center = center_columns(width, center_fraction)
    target = width / acceleration
    if target < len(center):
        raise ValueError(
            f"center_fraction {center_fraction} keeps {len(center)} centre columns of {width}, more than "
            f"width / acceleration = {target:.1f}; expected center_fraction <= 1 / acceleration")
    rng = _rng(seed, key)
    mask = np.zeros(width, dtype=bool)
    mask[center] = True
    outside = np.flatnonzero(~mask)
    if pattern == "random":
        prob = (target - len(center)) / max(1, len(outside))
        mask[outside[rng.uniform(size=len(outside)) < prob]] = True
    elif pattern == "equispaced":
        n_other = int(round(target)) - len(center)
        if n_other > 0:
            step = len(outside) / n_other
            picks = np.floor(rng.uniform(0, step) + step * np.arange(n_other)).astype(int)
            mask[outside[picks]] = True
    elif pattern == "equispaced_fraction":
        n_low = len(center)
        spacing = acceleration * (n_low - width) / (n_low * acceleration - width) if n_low * acceleration != width \
            else float(width)
        offset = int(rng.integers(0, max(1, round(spacing))))
        mask[np.around(np.arange(offset, width - 1, spacing)).astype(int)] = True
    else:
        mask |= _magic_columns(width, acceleration, int(rng.integers(0, max(1, round(acceleration)))))
    return torch.from_numpy(mask)


def _magic_columns(width: int, acceleration: float, offset: int) -> np.ndarray:
    """The "magic" family's columns outside the centre: every ``acceleration``-th frequency f >= 0 from one offset and
    every one of f < 0 from an offset that keeps -f off the positive set (``make_mask``), in the centred layout."""
    if acceleration != int(acceleration):
        raise ValueError(f"the magic mask family needs an integer acceleration, got {acceleration}")
    step = int(acceleration)
    pos_start, neg_start = (offset + 1, offset + 2) if offset % 2 == 0 else (offset + 2, offset - 1)
    positive = np.zeros((width + 1) // 2, dtype=bool)        # frequencies 0, 1, ..., in order
    negative = np.zeros(width - len(positive), dtype=bool)   # frequencies -1, -2, ..., in order
    positive[pos_start::step] = True
    negative[neg_start::step] = True
    unshifted = np.concatenate((positive, negative[::-1]))    # numpy's FFT order: 0, 1, ..., then ..., -2, -1
    return np.fft.fftshift(unshifted)


def column_mask(width: int, mask=None, pattern: str = "random", acceleration: float = 4.0,
                center_fraction: float = 0.08, seed: int = 0, key: str | None = None) -> tuple[torch.Tensor, str]:
    """(bool mask (width,), its pattern name): ``mask`` checked (bool, or 0 / 1 entries; "explicit"), else
    ``make_mask(pattern, ...)``.  A mask that samples no column is an error."""
    if mask is None:
        mask = make_mask(pattern, width, acceleration, center_fraction, seed, key)
    else:
        mask, pattern = torch.as_tensor(mask), "explicit"
        if mask.shape != (width,):
            raise ValueError(f"mask must have shape (W,) = ({width},), got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError("mask must be boolean or contain only 0 and 1")
            mask = mask.bool()
    if not bool(mask.any()):
        raise ValueError("mask samples no column; expected at least one True entry")
    return mask.clone(), pattern


def sampled_columns(y: torch.Tensor) -> torch.Tensor:
    """(B, W) bool: the k-space columns of y (B, C, H, W, 2) holding any non-zero value (the sampled ones
    of a masked measurement)."""
    return y.detach().ne(0).any(-1).any(-2).any(1)


class ColumnSampling:
    """Column sampling M of k-space (B, C, H, W, 2) for a ``LinearOperator`` with a ``mask`` buffer (W,) that every
    measurement shares, or, bound to a batch (``bound_to_rows``), one mask per row (B, W): each sample's own."""

    row_masks: torch.Tensor | None = None      # (B, W) bool when bound to a batch

    def _weights(self, like: torch.Tensor) -> torch.Tensor:
        """M as weights broadcasting over ``like`` (B, ..., H, W, 2): (W, 1), or (B, 1, .., W, 1) per row."""
        if self.row_masks is None:
            return self.mask.to(dtype=like.dtype, device=like.device)[:, None]
        if like.shape[0] != self.row_masks.shape[0]:
            raise ValueError(f"{type(self).__name__} bound to {self.row_masks.shape[0]} measurements (at(y)) applied to "
                             f"a batch of {like.shape[0]}; expected the rows it was bound to")
        rows = self.row_masks.to(dtype=like.dtype, device=like.device)
        return rows.view(rows.shape[0], *([1] * (like.dim() - 3)), rows.shape[1], 1)

    def bound_to_rows(self, y: torch.Tensor, **per_row):
        """A shallow copy acting on the rows of y (B, *out_shape) only: masks = y's sampled columns, and the
        attributes ``per_row`` (tensors with a leading B)."""
        bound = copy.copy(self)
        bound.row_masks = sampled_columns(y)
        for name, value in per_row.items():
            setattr(bound, name, value)
        return bound

    def apply_mask(self, k: torch.Tensor) -> torch.Tensor:
        """M k: k-space (B, *out_shape) with the unsampled columns set to zero."""
        return k * self._weights(k)

    def measured_part(self, e: torch.Tensor) -> torch.Tensor:
        """``e`` on the sampled columns only (M e)."""
        return self.apply_mask(e)
