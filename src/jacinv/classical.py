"""Classical reconstructions that evaluate.py puts beside the network: adjoint, pseudo-inverse,
Tikhonov and total variation, their weights chosen on training pairs."""
from __future__ import annotations

import numpy as np
import torch

from ._checks import finite_number, positive_int
from .models import AdjointInput
from .operators import LinearOperator
from .operators.base import conjugate_gradient
from .regularizers import l2_distance

TIKHONOV_WEIGHTS = tuple(10.0**k for k in range(-4, 2))
TV_WEIGHTS = tuple(10.0**k for k in range(-4, 1))


def tikhonov(operator: LinearOperator, y: torch.Tensor, mu: float, iters: int = 200) -> torch.Tensor:
    """argmin ||A x - y||^2 + mu ||x||^2 by conjugate gradients on (A^T A + mu I) x = A^T y."""
    return conjugate_gradient(lambda p: operator.gram(p) + mu * p, operator.adjoint(y), iters)


def image_gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences of images (B, C, H, W) with a zero difference at the far border: (B, 2, C, H, W)."""
    dh = torch.zeros_like(x)
    dw = torch.zeros_like(x)
    dh[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    dw[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    return torch.stack([dh, dw], 1)


def image_gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """The adjoint of ``image_gradient`` (minus the divergence): (B, 2, C, H, W) -> (B, C, H, W)."""
    gh, gw = g[:, 0], g[:, 1]
    out = torch.zeros_like(gh)
    out[..., :-1, :] -= gh[..., :-1, :]
    out[..., 1:, :] += gh[..., :-1, :]
    out[..., :, :-1] -= gw[..., :, :-1]
    out[..., :, 1:] += gw[..., :, :-1]
    return out


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """(B,) isotropic total variation: the sum over pixels and channels of |grad x|."""
    return image_gradient(x).pow(2).sum(1).sqrt().flatten(1).sum(1)


def tv_reconstruction(operator: LinearOperator, y: torch.Tensor, mu: float, iters: int = 300) -> torch.Tensor:
    """argmin over x in [0, 1]^n of 1/2 ||A x - y||^2 + mu TV(x), for image operators (in_shape (C, H, W)),
    by the primal-dual algorithm of Chambolle and Pock (``iters`` iterations from A^T y / ||A||^2, clipped)."""
    if len(operator.in_shape) != 3:
        raise ValueError(f"tv_reconstruction needs images: operator.in_shape must be (C, H, W), got {operator.in_shape}")
    mu = finite_number(mu, "mu", low=0.0)
    positive_int(iters, "iters")
    step = 0.99 / (1.01 * operator.spectral_norm() ** 2 + 8.0) ** 0.5  # ||(A, grad)||^2 <= ||A||^2 + 8
    x = AdjointInput(operator)(y).clamp(0, 1)
    x_bar = x.clone()
    p = torch.zeros_like(y)
    q = torch.zeros_like(image_gradient(x))
    for _ in range(iters):
        p = (p + step * (operator(x_bar) - y)) / (1 + step)
        q = q + step * image_gradient(x_bar)
        q = q * (mu / q.pow(2).sum(1, keepdim=True).sqrt().clamp_min(1e-30)).clamp(max=1.0)  # onto |q_i| <= mu
        x_new = (x - step * (operator.adjoint(p) + image_gradient_adjoint(q))).clamp(0, 1)
        x_bar = 2 * x_new - x
        x = x_new
    return x


def best_weight(reconstruct, grid, train_y: torch.Tensor, train_x: torch.Tensor) -> float:
    """The weight of ``grid`` whose reconstructions of train_y are closest (mean l2) to train_x."""
    errors = [float(l2_distance(reconstruct(train_y, mu), train_x).mean()) for mu in grid]
    return grid[int(np.argmin(errors))]


def weighted_name(method: str, weight: float, grid) -> str:
    """"tv(mu=0.01)"; ", grid edge" is added when the weight is the grid's smallest or largest, where a
    wider grid might have done better."""
    edge = ", grid edge" if weight in (min(grid), max(grid)) else ""
    return f"{method}(mu={weight:g}{edge})"


def baselines(operator: LinearOperator, y: torch.Tensor, train_y: torch.Tensor, train_x: torch.Tensor) -> dict:
    """Classical reconstructions of y: A^T y / ||A||^2, the pseudo-inverse, Tikhonov and (for images)
    total variation, each weight chosen on (train_y, train_x) from a log grid (see ``weighted_name``)."""
    with torch.no_grad():
        tik = lambda ys, mu: tikhonov(operator, ys, mu)  # noqa: E731
        mu = best_weight(tik, TIKHONOV_WEIGHTS, train_y, train_x)
        out = {"adjoint": AdjointInput(operator)(y), "pseudo_inverse": operator.pseudo_inverse(y),
               weighted_name("tikhonov", mu, TIKHONOV_WEIGHTS): tik(y, mu)}
        if len(operator.in_shape) == 3 and min(operator.in_shape[1:]) > 1:
            tv = lambda ys, mu: tv_reconstruction(operator, ys, mu)  # noqa: E731
            mu = best_weight(tv, TV_WEIGHTS, train_y, train_x)
            out[weighted_name("tv", mu, TV_WEIGHTS)] = tv(y, mu)
        return out
