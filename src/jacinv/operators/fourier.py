"""Centred orthonormal 2-D Fourier transforms on real tensors with a trailing (real, imag) axis, and the centre
crop of the centred grid."""
from __future__ import annotations

import torch


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal FFT over dims (-3, -2) of (..., H, W, 2) -> (..., H, W, 2)."""
    z = torch.view_as_complex(x.contiguous())
    z = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    return torch.view_as_real(z)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (also its adjoint: the transform is unitary)."""
    z = torch.view_as_complex(k.contiguous())
    z = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(z, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
    return torch.view_as_real(z)


def complex_abs(x: torch.Tensor) -> torch.Tensor:
    """Magnitude of (..., 2) real/imag data, (..., 2) -> (...)."""
    return torch.sqrt((x**2).sum(-1))


def center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Crop the last two dims of ``x`` to ``shape`` around the centre."""
    h, w = x.shape[-2:]
    ch, cw = shape
    if ch > h or cw > w:
        raise ValueError(f"crop {shape} is larger than the image ({h}, {w})")
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top: top + ch, left: left + cw]


def center_pad(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Zero-pad the last two dims of ``x`` to ``shape`` around it: the adjoint of ``center_crop`` to x's size."""
    (h, w), (big_h, big_w) = x.shape[-2:], shape
    if h > big_h or w > big_w:
        raise ValueError(f"image ({h}, {w}) is larger than the padded shape {tuple(shape)}")
    top, left = (big_h - h) // 2, (big_w - w) // 2
    return torch.nn.functional.pad(x, (left, big_w - w - left, top, big_h - h - top))
