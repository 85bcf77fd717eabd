"""Reconstruction metrics, per sample, following fastMRI's definitions.

All take ``gt`` and ``pred`` of shape (B, C, H, W) (or (B, ...) for nmse) and return (B,)
float64 numpy arrays.  ``data_range`` defaults to each ground truth's maximum, as fastMRI does.
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity


def volume_maxima(x: torch.Tensor, volumes: torch.Tensor) -> torch.Tensor:
    """(N,) the maximum of the volume each of the N slices x (N, ...) belongs to (``volumes`` (N,) indices)."""
    peaks = x.flatten(1).amax(1)
    per_volume = peaks.new_zeros(int(volumes.max()) + 1).scatter_reduce(0, volumes, peaks, "amax", include_self=False)
    return per_volume[volumes]


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)


def _ranges(gt: np.ndarray, data_range) -> np.ndarray:
    if data_range is None:
        return gt.reshape(gt.shape[0], -1).max(1)
    try:
        ranges = np.broadcast_to(np.asarray(data_range, dtype=np.float64), (gt.shape[0],))
    except (TypeError, ValueError) as err:
        raise ValueError(f"data_range must be None, a number or one number per sample ({gt.shape[0]}), "
                         f"got {data_range!r}") from err
    if not np.all(np.isfinite(ranges) & (ranges > 0)):
        raise ValueError(f"data_range must be finite and > 0 (the signal's peak-to-peak range), got {data_range!r}")
    return ranges


def _check(gt: np.ndarray, pred: np.ndarray) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got {gt.shape} and {pred.shape}")


def nmse(gt, pred) -> np.ndarray:
    """||gt - pred||^2 / ||gt||^2 per sample (NaN where gt is all zero)."""
    gt, pred = _np(gt), _np(pred)
    _check(gt, pred)
    axes = tuple(range(1, gt.ndim))
    energy = (gt**2).sum(axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(energy > 0, ((gt - pred) ** 2).sum(axes) / energy, np.nan)


def psnr(gt, pred, data_range=None) -> np.ndarray:
    """10 log10(data_range^2 / MSE) per sample, in dB."""
    gt, pred = _np(gt), _np(pred)
    _check(gt, pred)
    mse = ((gt - pred) ** 2).reshape(gt.shape[0], -1).mean(1)
    return 10 * np.log10(_ranges(gt, data_range) ** 2 / np.maximum(mse, 1e-30))


def ssim(gt, pred, data_range=None, win_size: int = 7) -> np.ndarray:
    """Mean SSIM over channels per sample (7x7 window; images smaller than the window use
    the largest odd window that fits)."""
    gt, pred = _np(gt), _np(pred)
    _check(gt, pred)
    if gt.ndim != 4:
        raise ValueError(f"ssim expects (B, C, H, W) images, got shape {gt.shape}")
    win = min(win_size, *(s - (1 - s % 2) for s in gt.shape[-2:]))
    ranges = _ranges(gt, data_range)
    return np.array([np.mean([structural_similarity(g, p, data_range=r, win_size=win) for g, p in zip(gi, pi)])
                     for gi, pi, r in zip(gt, pred, ranges)])


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of RGB images in [0, 1], (B, 3, H, W) -> (B, 1, H, W), as SR papers report."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def shave(x: torch.Tensor, border: int) -> torch.Tensor:
    """Crop ``border`` pixels from every side of (..., H, W)."""
    return x[..., border:-border, border:-border] if border > 0 else x
