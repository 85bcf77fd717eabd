"""Cartesian MRI forward model: centred orthonormal 2-D FFT and a column mask."""
from __future__ import annotations

import math

import torch

from .._checks import as_shape
from ..operators.base import LinearOperator
from ..operators.fourier import center_crop, center_pad, complex_abs, fft2c, ifft2c
from .masks import ColumnSampling, column_mask, sampled_columns


def mirror_columns(width: int) -> torch.Tensor:
    """Index of the column holding frequency -f for each column of frequency f (centred layout)."""
    return (2 * (width // 2) - torch.arange(width)) % width


class KSpaceSubsample(ColumnSampling, LinearOperator):
    """y = M F x: centred orthonormal 2-D FFT (fastMRI's fft2c), then keep the masked columns.

    Shapes: x (B, C, H, W) for real images or (B, C, H, W, 2) for complex ones;
    y (B, C, H, W, 2), the full k-space grid with unsampled columns zero.

    Either give ``mask`` (bool, shape (W,)) or (acceleration, center_fraction,
    pattern, seed, key); see :func:`jacinv.mri.masks.make_mask`.  ``key`` (e.g. a
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
        mask, self.pattern = column_mask(in_shape[2], mask, pattern, acceleration, center_fraction, seed, key)
        self.acceleration = float(acceleration) if self.pattern != "explicit" else in_shape[2] / int(mask.sum())
        super().__init__(in_shape, (*in_shape[:3], 2))
        self.register_buffer("mask", mask)

    def image(self, k: torch.Tensor) -> torch.Tensor:
        """The image of a full k-space estimate k (B, *out_shape): F^-1 k, or its real part for real images."""
        image = ifft2c(k)
        return image if self.complex_input else image[..., 0]

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


class MeasuredKSpace(KSpaceSubsample):
    """Measured Cartesian k-space whose sampling differs from measurement to measurement (fastMRI:
    one mask per volume), for targets on a smaller image grid than the acquisition.

    Shapes: x (B, C, h, w) real target images (fastMRI's 320 x 320 crop); y (B, C, H, W, 2) the
    acquired k-space grid (kspace_shape = (H, W), e.g. 640 x 368), unsampled columns zero.

    A = F P: P places the target at the centre of the (H, W) grid (zeros around), F is the centred
    orthonormal FFT; ``adjoint`` is the real part of the centre crop of F^-1 y.  The mask of a
    measurement is read from the measurement itself (its non-zero columns): ``at(y)`` is A_i = M_i F P for each
    row.  The operator's own ``mask`` samples every column: unbound, ||A|| = 1 exactly (and ||A_i|| <= 1).
    """

    varies_per_sample = True

    def __init__(self, in_shape, kspace_shape):
        in_shape = as_shape(in_shape, "in_shape")
        kspace_shape = as_shape(kspace_shape, "kspace_shape")
        if len(in_shape) != 3 or len(kspace_shape) != 2:
            raise ValueError(f"in_shape must be (C, h, w) and kspace_shape (H, W); got {in_shape} and {kspace_shape}")
        if in_shape[1] > kspace_shape[0] or in_shape[2] > kspace_shape[1]:
            raise ValueError(f"the target grid {in_shape[1:]} must fit inside kspace_shape {kspace_shape}")
        channels = in_shape[0]
        super().__init__((channels, *kspace_shape), mask=torch.ones(kspace_shape[1], dtype=torch.bool))
        self.pattern = "measured"
        self.in_shape = in_shape
        self.kspace_shape = kspace_shape

    def at(self, y: torch.Tensor) -> "MeasuredKSpace":
        """A_i = M_i F P for each row of y (B, *out_shape), M_i its sampled columns."""
        return self.bound_to_rows(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = center_pad(x, self.kspace_shape)
        k = fft2c(torch.stack((padded, torch.zeros_like(padded)), dim=-1))
        return k * self._weights(k)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return center_crop(ifft2c(y * self._weights(y))[..., 0], self.in_shape[1:])

    def image(self, k: torch.Tensor) -> torch.Tensor:
        """The magnitude of the centre crop of F^-1 k, (B, C, H, W, 2) -> (B, C, h, w)."""
        return center_crop(complex_abs(ifft2c(k)), self.in_shape[1:])

    def pseudo_inverse(self, y: torch.Tensor, iters: int = 200, tol: float = 1e-10) -> torch.Tensor:
        """Unbound: A^T y (A^T A = P^T Re(F^-1 F) P = I on real targets); bound to masks: conjugate gradients."""
        if self.row_masks is None:
            return self.adjoint(y)
        return LinearOperator.pseudo_inverse(self, y, iters=iters, tol=tol)

    def spectral_norm(self) -> float:
        return 1.0

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, kspace_shape={self.kspace_shape}, masks read from each measurement"
