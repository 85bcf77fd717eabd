"""fastMRI's evaluation: per-volume NMSE, PSNR and SSIM of slices grouped by volume (its evaluate.py definitions)."""
from __future__ import annotations

import numpy as np
import torch

from ..metrics import ssim, volume_maxima


class VolumeMetrics:
    """fastMRI's volume metrics, accumulated slice batch by slice batch: per volume, NMSE
    ||x - p||^2 / ||x||^2, PSNR 10 log10(max(x)^2 / MSE) and SSIM (slice mean, data range max(x)),
    then averaged over the volumes.  Memory: a few numbers per volume."""

    def __init__(self):
        self.sums: dict[int, np.ndarray] = {}  # volume -> [err^2, x^2, values, max, ssim sum, slices]

    def add(self, x: torch.Tensor, pred: torch.Tensor, volumes: torch.Tensor, ssim_values: np.ndarray) -> None:
        for k, v in enumerate(volumes.tolist()):
            xv, pv = x[k].double(), pred[k].double()
            row = self.sums.setdefault(v, np.array([0.0, 0.0, 0.0, -np.inf, 0.0, 0.0]))
            row += [float(((xv - pv) ** 2).sum()), float((xv**2).sum()), xv.numel(), 0.0, ssim_values[k], 1.0]
            row[3] = max(row[3], float(xv.max()))

    def result(self) -> dict[str, float]:
        err, energy, count, peak, ssim_sum, slices = np.array(list(self.sums.values())).T
        return {"volume_nmse": float(np.mean(err / energy)),
                "volume_psnr": float(np.mean(10 * np.log10(peak**2 / (err / count)))),
                "volume_ssim": float(np.mean(ssim_sum / slices)), "volumes": len(self.sums)}


def volume_metrics(x: torch.Tensor, pred: torch.Tensor, volumes: torch.Tensor) -> dict[str, float]:
    """fastMRI's volume NMSE, PSNR and SSIM of (N, C, H, W) slices grouped by ``volumes`` (N,),
    averaged over the volumes (see ``VolumeMetrics``)."""
    acc = VolumeMetrics()
    acc.add(x, pred, volumes, ssim(x, pred, data_range=volume_maxima(x, volumes).double().numpy()))
    return acc.result()
