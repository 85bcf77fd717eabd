"""Evaluation of a trained network: metrics on a data set and Jacobian norms on a probe set."""
from __future__ import annotations

import numpy as np
import torch

from .metrics import nmse, psnr, ssim
from .operators import LinearOperator
from .regularizers import jacobian_spectral_norm, l2_distance, with_and_without_operator
from .schema import ConfigError


def samples_asked(n_samples: int | None, available: int, default: int, flag: str) -> int:
    """How many test signals an analysis uses: ``n_samples``, or ``default`` (at most ``available``) when
    None; asking for more than ``available`` or fewer than 1 is an error naming ``flag``."""
    if n_samples is None:
        return min(default, available)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or not 1 <= n_samples <= available:
        raise ConfigError(f"{flag} must be an int from 1 to the {available} test signals the run has, got "
                          f"{n_samples!r}")
    return n_samples


def batches(dataset, batch_size: int = 64):
    """Index tensors (B,) covering the data set in order."""
    for start in range(0, len(dataset), batch_size):
        yield torch.arange(start, min(len(dataset), start + batch_size))


def image_metrics(x: torch.Tensor, pred: torch.Tensor, data_range=1.0) -> dict[str, np.ndarray]:
    """Per-sample l2 distance, PSNR (dB), SSIM, NMSE of (N, C, H, W) images."""
    return {"l2": l2_distance(pred, x).numpy().astype(np.float64), "psnr": psnr(x, pred, data_range),
            "ssim": ssim(x, pred, data_range), "nmse": nmse(x, pred)}


def evaluate_split(model, dataset, device) -> dict[str, float]:
    """Means over the data set of the per-sample metrics (signals in [0, 1]: data range 1)."""
    was_training = model.training
    model.eval()
    per_sample: dict[str, list] = {}
    with torch.no_grad():
        for index in batches(dataset):  # a batch at a time: memory does not grow with the data set
            y, x = dataset.pairs(index)
            for k, v in image_metrics(x, model(y.to(device)).cpu()).items():
                per_sample.setdefault(k, []).append(v)
    model.train(was_training)
    return {k: float(np.concatenate(v).mean()) for k, v in per_sample.items()}


def probe_jacobian_norms(model, y: torch.Tensor, operator: LinearOperator, iters: int, seed: int,
                         j_domain: str = "all") -> dict:
    """Mean and max over the probe measurements of ||J A||_2 and ||J||_2 (power method lower bounds; A_i for
    operators that differ per measurement); with ``j_domain`` "measured", ||J P||_2 in place of ||J||_2 (P: the
    measured entries, ``operator.measured_projector()``), the norm such a regulariser bounds."""
    was_training = model.training
    model.eval()

    def norm(op):
        return jacobian_spectral_norm(model, y, op, iters=iters, generator=torch.Generator().manual_seed(seed)).detach()

    out = {}
    j_operator = operator.measured_projector() if j_domain == "measured" else None
    for key, norms in with_and_without_operator(norm, operator, j_operator).items():
        name = {"fa": "sja", "f": "sj"}[key]
        out[f"probe_mean_{name}"], out[f"probe_max_{name}"] = float(norms.mean()), float(norms.max())
    model.train(was_training)
    return out
