"""Cartesian MRI forward model: centred orthonormal 2-D FFT and a column mask."""
from __future__ import annotations

import math

import torch

from .._checks import as_shape
from .base import LinearOperator
from .fourier import fft2c, ifft2c
from .masks import make_mask


def mirror_columns(width: int) -> torch.Tensor:
    """Index of the column holding frequency -f for each column of frequency f (centred layout)."""
    return (2 * (width // 2) - torch.arange(width)) % width


class KSpaceSubsample(LinearOperator):
    """y = M F x: centred orthonormal 2-D FFT (fastMRI's fft2c), then keep the masked columns.

    Shapes: x (B, C, H, W) for real images or (B, C, H, W, 2) for complex ones;
    y (B, C, H, W, 2), the full k-space grid with unsampled columns zero.

    Either give ``mask`` (bool, shape (W,)) or (acceleration, center_fraction,
    pattern, seed, key); see :func:`jacinv.operators.masks.make_mask`.  ``key`` (e.g. a
    volume name) makes all slices of a volume share a mask.

    ``spectral_norm()`` is exact: 1 for complex input (any sampled column); for real
    input 1 when some sampled column's mirror column is also sampled (true whenever
    the centre column is), else 1 / sqrt(2), since a real image's spectrum is
    Hermitian-symmetric and a column without its mirror carries half the energy.
    """

    spectral_norm_is_exact = True

    def __init__(self, in_shape, acceleration: float = 4.0, center_fraction: float = 0.08,
                 pattern: str = "random", seed: int = 0, key: str | None = None, mask=None):
        in_shape = as_shape(in_shape, "in_shape")
        if len(in_shape) == 4 and in_shape[-1] != 2 or len(in_shape) not in (3, 4):
            raise ValueError(f"in_shape must be (C, H, W) for real or (C, H, W, 2) for complex images, got {in_shape}")
        self.complex_input = len(in_shape) == 4
        width = in_shape[2]
        if mask is None:
            mask = make_mask(pattern, width, acceleration, center_fraction, seed, key)
            self.pattern, self.acceleration = pattern, float(acceleration)
        else:
            mask = torch.as_tensor(mask)
            if mask.shape != (width,):
                raise ValueError(f"mask must have shape (W,) = ({width},), got {tuple(mask.shape)}")
            if mask.dtype != torch.bool:
                if not bool(((mask == 0) | (mask == 1)).all()):
                    raise ValueError("mask must be boolean or contain only 0 and 1")
                mask = mask.bool()
            self.pattern, self.acceleration = "explicit", width / max(1, int(mask.sum()))
        if not bool(mask.any()):
            raise ValueError("mask samples no column; expected at least one True entry")
        super().__init__(in_shape, (*in_shape[:3], 2))
        self.register_buffer("mask", mask.clone())

    def _weights(self, like: torch.Tensor) -> torch.Tensor:
        """The mask as (W, 1) weights broadcasting over (..., H, W, 2)."""
        return self.mask.to(dtype=like.dtype, device=like.device)[:, None]

    def apply_mask(self, k: torch.Tensor) -> torch.Tensor:
        """M k: k-space (B, *out_shape) with the unsampled columns set to zero."""
        return k * self._weights(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.complex_input:
            x = torch.stack((x, torch.zeros_like(x)), dim=-1)
        return fft2c(x) * self._weights(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        image = ifft2c(y * self._weights(y))
        return image if self.complex_input else image[..., 0]

    def pseudo_inverse(self, y: torch.Tensor, iters: int = 200, tol: float = 1e-10) -> torch.Tensor:
        """Complex input: the zero-filled reconstruction A^T y is exactly A^+ y (A A^T = M is a projection).
        Real input: conjugate gradients (A^T A is not a projection there)."""
        if self.complex_input:
            return self.adjoint(y)
        return super().pseudo_inverse(y, iters=iters, tol=tol)

    def spectral_norm(self) -> float:
        if self.complex_input:
            return 1.0
        cols = self.mask.cpu()
        paired = bool((cols & cols[mirror_columns(cols.numel())]).any())
        return 1.0 if paired else 1.0 / math.sqrt(2.0)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, pattern={self.pattern!r}, "
                f"sampled={int(self.mask.sum())}/{self.mask.numel()} columns")
