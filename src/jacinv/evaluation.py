"""Evaluation of a trained network: metrics on a data set and Jacobian norms on a probe set."""
from __future__ import annotations

import numpy as np
import torch

from .metrics import nmse, psnr, ssim
from .operators import LinearOperator
from .regularizers import jacobian_spectral_norm, l2_distance, with_and_without_operator


@torch.no_grad()
def predict(model, dataset, device, batch_size: int = 64):
    """(y, x, x_hat) over the whole data set, on the CPU."""
    ys, xs, preds = [], [], []
    for start in range(0, len(dataset), batch_size):
        index = torch.arange(start, min(len(dataset), start + batch_size))
        y = dataset.measure(index)
        ys.append(y)
        xs.append(dataset.signals[index])
        preds.append(model(y.to(device)).cpu())
    return torch.cat(ys), torch.cat(xs), torch.cat(preds)


def image_metrics(x: torch.Tensor, pred: torch.Tensor, data_range=1.0) -> dict[str, np.ndarray]:
    """Per-sample l2 distance, PSNR (dB), SSIM, NMSE of (N, C, H, W) images."""
    return {"l2": l2_distance(pred, x).numpy().astype(np.float64), "psnr": psnr(x, pred, data_range),
            "ssim": ssim(x, pred, data_range), "nmse": nmse(x, pred)}


def evaluate_split(model, dataset, device) -> dict[str, float]:
    """Means over the data set of the per-sample metrics (signals in [0, 1]: data range 1)."""
    was_training = model.training
    model.eval()
    _, x, pred = predict(model, dataset, device)
    model.train(was_training)
    return {k: float(v.mean()) for k, v in image_metrics(x, pred).items()}


def probe_jacobian_norms(model, y: torch.Tensor, operator: LinearOperator, iters: int, seed: int) -> dict:
    """Mean and max over the probe measurements of ||J A||_2 and ||J||_2 (power method lower bounds)."""
    was_training = model.training
    model.eval()
    norm = lambda op: jacobian_spectral_norm(model, y, op, iters=iters,  # noqa: E731
                                             generator=torch.Generator().manual_seed(seed)).detach()
    out = {}
    for key, norms in with_and_without_operator(norm, operator).items():
        name = {"fa": "sja", "f": "sj"}[key]
        out[f"probe_mean_{name}"], out[f"probe_max_{name}"] = float(norms.mean()), float(norms.max())
    model.train(was_training)
    return out
