"""Coil sensitivity maps S (coils, H, W, 2): complex, real and imaginary parts in a trailing axis.

Maps are kept at unit root-sum-of-squares, sum_c |S_c(p)|^2 = 1 at every pixel p they cover (0 elsewhere),
so that S^H S is the identity on the covered pixels and ||M F S|| <= 1 for any column mask M.
"""
from __future__ import annotations

import math

import torch

from .._checks import as_shape, positive_int
from ..operators.fourier import ifft2c
from .masks import sampled_columns


def rss(coil_images: torch.Tensor) -> torch.Tensor:
    """Root-sum-of-squares over the coils: (B, coils, H, W, 2) -> (B, 1, H, W)."""
    return coil_images.pow(2).sum(dim=(1, -1), keepdim=True).sqrt()[..., 0]


def check_maps(maps, shape: tuple[int, int] | None = None, name: str = "maps") -> torch.Tensor:
    """``maps`` as a float tensor (coils, H, W, 2), checked: its shape (H, W = ``shape`` when given) and
    finite values; else an error naming ``name``, the value and what was expected."""
    if not isinstance(maps, torch.Tensor):
        maps = torch.as_tensor(maps)
    if maps.is_complex():
        maps = torch.view_as_real(maps)
    expected = f"(coils, {shape[0]}, {shape[1]}, 2)" if shape is not None else "(coils, H, W, 2)"
    if maps.dim() != 4 or maps.shape[-1] != 2 or (shape is not None and tuple(maps.shape[1:3]) != tuple(shape)):
        raise ValueError(f"{name} must have shape {expected} (complex maps as a trailing real/imag axis, or a "
                         f"complex tensor (coils, H, W)), got {tuple(maps.shape)}")
    if not maps.is_floating_point():
        maps = maps.float()
    bad = (~torch.isfinite(maps)).sum()
    if bad:
        raise ValueError(f"{name} must be finite, got {int(bad)} non-finite entries")
    return maps


def normalise_maps(maps: torch.Tensor, name: str = "maps") -> torch.Tensor:
    """``maps`` (coils, H, W, 2) scaled to unit root-sum-of-squares wherever they are not all zero; maps that are
    zero at every pixel are an error naming ``name``."""
    maps = check_maps(maps, name=name)
    norm = maps.pow(2).sum(dim=(0, -1)).sqrt()            # (H, W)
    if not bool((norm > 0).any()):
        raise ValueError(f"{name} are zero at every pixel; expected sensitivities that cover the image")
    scale = norm.clamp_min(torch.finfo(maps.dtype).tiny)[None, :, :, None]
    return torch.where((norm > 0)[None, :, :, None], maps / scale, torch.zeros_like(maps))


def birdcage_maps(coils: int, shape, radius: float = 1.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Analytic sensitivities of ``coils`` loops spread evenly on a circle of ``radius`` (in half-widths of
    the image) around it, the standard model for simulated multi-coil data: coil c at angle
    theta_c = 2 pi c / coils sees pixel p with magnitude 1 / |p - q_c| (q_c its position) and a phase that
    turns with the angle around it, less theta_c.  Normalised to unit root-sum-of-squares; (coils, H, W, 2)."""
    positive_int(coils, "coils")
    h, w = as_shape(shape, "shape")
    if not (math.isfinite(radius) and radius > 1.0):
        raise ValueError(f"radius must be a finite number > 1 (the coils outside the image), got {radius!r}")
    y = (torch.arange(h, dtype=torch.float64) - h / 2) / (h / 2)
    x = (torch.arange(w, dtype=torch.float64) - w / 2) / (w / 2)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    maps = []
    for c in range(coils):
        theta = 2 * math.pi * c / coils
        dy, dx = yy - radius * math.sin(theta), xx - radius * math.cos(theta)
        magnitude = 1.0 / torch.sqrt(dx ** 2 + dy ** 2)
        phase = torch.atan2(dx, -dy) - theta
        maps.append(torch.stack((magnitude * torch.cos(phase), magnitude * torch.sin(phase)), dim=-1))
    return normalise_maps(torch.stack(maps)).to(dtype)


def acs_columns(sampled: torch.Tensor) -> torch.Tensor:
    """(B, W) bool: the auto-calibration lines of each row of column masks ``sampled`` (B, W), the contiguous run of
    sampled columns around the centre column W // 2 (none when the centre is not sampled); on the device, no sync."""
    width = sampled.shape[-1]
    idx = torch.arange(width, device=sampled.device)
    center = width // 2
    gap_left = torch.where(~sampled & (idx < center), idx, torch.full_like(idx, -1)).amax(-1, keepdim=True)
    gap_right = torch.where(~sampled & (idx >= center), idx, torch.full_like(idx, width)).amin(-1, keepdim=True)
    return (idx > gap_left) & (idx < gap_right) & sampled[..., center: center + 1]


def acs_coil_images(y: torch.Tensor) -> torch.Tensor:
    """The coil images of each measurement's auto-calibration lines alone (low resolution), (B, coils, H, W, 2) from
    y (B, coils, H, W, 2) with its unsampled columns zero."""
    acs = acs_columns(sampled_columns(y)).to(y.dtype)[:, None, None, :, None]
    return ifft2c(y * acs)


def unit_rss(coil_images: torch.Tensor) -> torch.Tensor:
    """Per-sample maps (B, coils, H, W, 2) at unit root-sum-of-squares: the images over their RSS (0 where it is)."""
    norm = rss(coil_images).unsqueeze(-1)                                    # (B, 1, H, W, 1)
    tiny = torch.finfo(coil_images.dtype).tiny
    return torch.where(norm > 0, coil_images / norm.clamp_min(tiny), torch.zeros_like(coil_images))


def acs_maps(y: torch.Tensor) -> torch.Tensor:
    """Coil maps (B, coils, H, W, 2) estimated from each measurement's auto-calibration lines (fastMRI's E2E VarNet
    starts from the same estimate): ``acs_coil_images`` at unit root-sum-of-squares, wherever the low-resolution
    image is not zero."""
    return unit_rss(acs_coil_images(y))
