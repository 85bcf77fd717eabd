"""Seeded geometric and intensity transforms of images (N, C, H, W) with values in [0, 1].

Two users draw from them: train-time augmentation (``Augmentation``: flips, small rotations, a smooth
elastic deformation, a bias field, gamma) and the new-subject shift (``shift.imitate_new_subject``: a
head-shape affine map and a tissue-contrast curve, families augmentation never uses).  Every random draw
comes from a generator per sample, so a sample's transform depends only on (seed, epoch, index).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._checks import positive_int

AUGMENTATIONS = ("flip", "rotate", "elastic", "bias", "gamma")
MAX_ROTATION_DEG = 10.0       # rotate: angle uniform in +- this
ELASTIC_PIXELS = 2.0          # elastic: standard deviation of the displacement at the control points (pixels)
ELASTIC_GRID = 5              # elastic: control points per side (the field is their bicubic interpolation)
BIAS_STD = 0.15               # bias: standard deviation of the log-gain at the control points of a 3 x 3 grid
GAMMA_RANGE = (0.7, 1.4)      # gamma: exponent log-uniform in this range


def seed_for(*parts) -> int:
    """A 63-bit seed from any parts (hash of their text): one independent stream per (seed, epoch, index, ...)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def check_images(signals: torch.Tensor, name: str = "signals") -> torch.Tensor:
    """``signals`` if it is a real floating tensor (N, C, H, W), else an error naming ``name``."""
    if not isinstance(signals, torch.Tensor) or signals.dim() != 4 or signals.is_complex() \
            or not signals.is_floating_point():
        got = (f"{tuple(signals.shape)} {signals.dtype}" if isinstance(signals, torch.Tensor)
               else type(signals).__name__)
        raise ValueError(f"{name} must be real images (N, C, H, W), got {got}")
    return signals


def uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def smooth_field(generator: torch.Generator, channels: int, size: tuple[int, int], grid: int) -> torch.Tensor:
    """A smooth random field (channels, H, W): standard normal values on a ``grid`` x ``grid`` lattice of control
    points spanning the image, interpolated bicubically."""
    coarse = torch.randn((1, channels, grid, grid), generator=generator, dtype=torch.float64)
    return F.interpolate(coarse, size=size, mode="bicubic", align_corners=True)[0]


def base_grid(n: int, h: int, w: int, dtype=torch.float64) -> torch.Tensor:
    """Sampling grid (N, H, W, 2) of the identity map in grid_sample's normalised (x, y) coordinates."""
    return F.affine_grid(torch.eye(2, 3, dtype=dtype).expand(n, 2, 3), (n, 1, h, w), align_corners=False)


def affine_grid(matrices: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sampling grid (N, H, W, 2) of the maps p -> M p + t given as (N, 2, 3) in pixel-isotropic coordinates
    centred on the image (so that a rotation stays a rotation on a non-square image)."""
    n = matrices.shape[0]
    scale = torch.tensor([w / max(h, w), h / max(h, w)], dtype=matrices.dtype)   # normalised -> isotropic
    grid = base_grid(n, h, w, matrices.dtype) * scale
    mapped = torch.einsum("nij,nhwj->nhwi", matrices[:, :, :2], grid) + matrices[:, None, None, :, 2]
    return mapped / scale


def warp(signals: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``signals`` (N, C, H, W) resampled bilinearly at ``grid`` (N, H, W, 2); outside the image: zeros (the
    background of MR images).  Values stay in the range of the input (bilinear weights are convex)."""
    return F.grid_sample(signals.double(), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).to(signals.dtype)


class Augmentation:
    """Train-time augmentation: ``augment(signals, index, epoch)`` -> the same shape, values in [0, 1].

    Args:
        names: a non-empty subset of AUGMENTATIONS, applied in that order: "flip" (left-right, probability
            1/2), "rotate" (+- MAX_ROTATION_DEG), "elastic" (smooth displacement, ELASTIC_PIXELS at the
            control points), "bias" (a smooth multiplicative gain exp(BIAS_STD g), the result divided by its
            maximum when that exceeds 1), "gamma" (x ** g, g log-uniform in GAMMA_RANGE).  The geometric ones
            are composed into one resampling.
        seed: with the epoch and the sample's index, the seed of its draw: a resumed run sees the same images.
    """

    def __init__(self, names: Sequence[str], seed: int = 0):
        names = list(names)
        unknown = [n for n in names if n not in AUGMENTATIONS]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(f"augmentations must be a non-empty list of distinct names from {list(AUGMENTATIONS)}, "
                             f"got {names!r}")
        self.names = tuple(n for n in AUGMENTATIONS if n in names)
        self.seed = positive_int(seed, "seed", minimum=0)

    def __repr__(self) -> str:
        return f"Augmentation({list(self.names)}, seed={self.seed})"

    def __call__(self, signals: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        check_images(signals)
        if len(index) != signals.shape[0]:
            raise ValueError(f"index must hold one dataset index per signal ({signals.shape[0]}), got {len(index)}")
        return torch.stack([self._one(x, torch.Generator().manual_seed(seed_for(self.seed, "augment", epoch, int(i))))
                            for x, i in zip(signals, index)])

    def _one(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One image (C, H, W) transformed with the draws of ``gen``."""
        c, h, w = x.shape
        flip = -1.0 if "flip" in self.names and uniform(gen, 0.0, 1.0) < 0.5 else 1.0
        angle = math.radians(uniform(gen, -MAX_ROTATION_DEG, MAX_ROTATION_DEG)) if "rotate" in self.names else 0.0
        cos, sin = math.cos(angle), math.sin(angle)
        matrix = torch.tensor([[[flip * cos, -sin, 0.0], [flip * sin, cos, 0.0]]], dtype=torch.float64)
        grid = affine_grid(matrix, h, w)
        if "elastic" in self.names:
            pixels = smooth_field(gen, 2, (h, w), ELASTIC_GRID) * ELASTIC_PIXELS       # (2, H, W): x and y
            grid = grid + (pixels * torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)[:, None, None]).permute(1, 2, 0)
        out = warp(x[None], grid)[0] if (flip < 0 or angle or "elastic" in self.names) else x
        if "bias" in self.names:
            gain = torch.exp(BIAS_STD * smooth_field(gen, 1, (h, w), 3)).to(out.dtype)
            out = out * gain
            out = out / max(1.0, float(out.max()))
        if "gamma" in self.names:
            g = math.exp(uniform(gen, math.log(GAMMA_RANGE[0]), math.log(GAMMA_RANGE[1])))
            out = out ** g
        return out.to(x.dtype)
