"""Column (phase-encoding) sampling masks for Cartesian MRI.

Each mask function owns no global state: a mask is a pure function of
(pattern, width, acceleration, center_fraction, seed, key), where ``key`` is any
string such as a volume name (every slice of a volume then shares its mask) and,
only when a run asks for it, a rank suffix so that torchrun ranks draw differently.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from .._checks import choice, finite_number, positive_int

PATTERNS = ("random", "equispaced")


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
    ``acceleration`` is the effective one (width / number of sampled columns).
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
    else:
        n_other = int(round(target)) - len(center)
        if n_other > 0:
            step = len(outside) / n_other
            picks = np.floor(rng.uniform(0, step) + step * np.arange(n_other)).astype(int)
            mask[outside[picks]] = True
    return torch.from_numpy(mask)
