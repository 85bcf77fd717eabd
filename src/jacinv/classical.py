"""Classical reconstructions that evaluate.py puts beside the network: adjoint, pseudo-inverse,
Tikhonov and total variation, their weights chosen on training pairs by a widening decade search."""
from __future__ import annotations

import numpy as np
import torch

from ._checks import finite_number, positive_int
from .models import AdjointInput
from .mri import MultiCoilKSpace, rss
from .operators import KSpaceSubsample, LinearOperator, complex_abs, ifft2c
from .operators.fourier import center_crop
from .operators.base import conjugate_gradient
from .regularizers import l2_distance

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


TV_ITERS = 300    # TV's iteration cap (it stops earlier once converged)


def tv_reconstruction(operator: LinearOperator, y: torch.Tensor, mu: float, iters: int = TV_ITERS,
                      tol: float = 1e-5) -> torch.Tensor:
    """argmin over x in [0, 1]^n of 1/2 ||A x - y||^2 + mu TV(x), for image operators (in_shape (C, H, W)),
    by the primal-dual algorithm of Chambolle and Pock: at most ``iters`` iterations from A^T y / ||A||^2
    (clipped), fewer once every sample's step ||x_k+1 - x_k|| is below ``tol`` ||x_k|| (checked every 10)."""
    if len(operator.in_shape) != 3:
        raise ValueError(f"tv_reconstruction needs images: operator.in_shape must be (C, H, W), got {operator.in_shape}")
    mu = finite_number(mu, "mu", low=0.0)
    positive_int(iters, "iters")
    step = 0.99 / (1.01 * operator.spectral_norm() ** 2 + 8.0) ** 0.5  # ||(A, grad)||^2 <= ||A||^2 + 8
    x = AdjointInput(operator)(y).clamp(0, 1)
    x_bar = x.clone()
    p = torch.zeros_like(y)
    q = torch.zeros_like(image_gradient(x))
    for k in range(iters):
        p = (p + step * (operator(x_bar) - y)) / (1 + step)
        q = q + step * image_gradient(x_bar)
        q = q * (mu / q.pow(2).sum(1, keepdim=True).sqrt().clamp_min(1e-30)).clamp(max=1.0)  # onto |q_i| <= mu
        x_new = (x - step * (operator.adjoint(p) + image_gradient_adjoint(q))).clamp(0, 1)
        x_bar = 2 * x_new - x
        if (k + 1) % 10 == 0 and bool((l2_distance(x_new, x) <= tol * l2_distance(x, torch.zeros_like(x))).all()):
            return x_new
        x = x_new
    return x


def search_weight(reconstruct, train_y: torch.Tensor, train_x: torch.Tensor, decades=(-4, 0),
                  extend: int = 2) -> tuple[float, tuple[float, ...]]:
    """(weight, every weight tried): the weight whose reconstructions of train_y are closest (mean l2) to
    train_x.  Decades 10^decades[0] ... 10^decades[1] first, widened by up to ``extend`` decades on the side
    where the best one sits at the edge, then its half-decade neighbours."""
    errors: dict[float, float] = {}

    def error(exponent: float) -> float:
        if exponent not in errors:
            errors[exponent] = float(l2_distance(reconstruct(train_y, 10.0**exponent), train_x).mean())
        return errors[exponent]

    lo, hi = decades
    for k in range(lo, hi + 1):
        error(float(k))
    for _ in range(extend):
        best = min(errors, key=errors.get)
        if best == min(errors):
            error(best - 1)
        elif best == max(errors):
            error(best + 1)
        else:
            break
    best = min(errors, key=errors.get)
    for neighbour in (best - 0.5, best + 0.5):
        error(neighbour)
    best = min(errors, key=errors.get)
    return 10.0**best, tuple(10.0**e for e in sorted(errors))


def best_weight(reconstruct, grid, train_y: torch.Tensor, train_x: torch.Tensor) -> float:
    """The weight of ``grid`` whose reconstructions of train_y are closest (mean l2) to train_x."""
    errors = [float(l2_distance(reconstruct(train_y, mu), train_x).mean()) for mu in grid]
    return grid[int(np.argmin(errors))]


def weighted_name(method: str, weight: float, grid) -> str:
    """"tv(mu=0.01)"; ", grid edge" is added when the weight is the grid's smallest or largest, where a
    wider grid might have done better."""
    edge = ", grid edge" if weight in (min(grid), max(grid)) else ""
    return f"{method}(mu={weight:.3g}{edge})"


def weighted_methods(operator: LinearOperator) -> dict:
    """{name: reconstruct(y, mu)} of the baselines with a weight that fit this operator (each measurement with its
    own A_i)."""
    methods = {"tikhonov": lambda ys, mu: tikhonov(operator.at(ys), ys, mu)}
    if len(operator.in_shape) == 3 and min(operator.in_shape[1:]) > 1:
        methods["tv"] = lambda ys, mu: tv_reconstruction(operator.at(ys), ys, mu)
    return methods


def fit_weights(operator: LinearOperator, train_y: torch.Tensor, train_x: torch.Tensor) -> dict:
    """{method: (weight, weights tried)} of the weighted baselines, chosen on (train_y, train_x) by
    ``search_weight``."""
    with torch.no_grad():
        return {name: search_weight(fn, train_y, train_x, decades=(-4, 1) if name == "tikhonov" else (-4, 0))
                for name, fn in weighted_methods(operator).items()}


def reconstructions(operator: LinearOperator, y: torch.Tensor, weights: dict) -> dict:
    """Classical reconstructions of y: A^T y / ||A||^2 (for k-space on real images: the zero-filled
    Re F^-1 y and fastMRI's zero-filled magnitude |F^-1 y|), the pseudo-inverse (each measurement's own A_i^+ for
    operators that differ per measurement), and the weighted
    methods of ``weights`` (from ``fit_weights``); names carry the weight (see ``weighted_name``)."""
    with torch.no_grad():
        if isinstance(operator, KSpaceSubsample) and not operator.complex_input:
            out = {"zero_filled_real": AdjointInput(operator)(y),  # Re F^-1 y
                   "zero_filled_magnitude": center_crop(complex_abs(ifft2c(y)), operator.in_shape[1:])}
        elif isinstance(operator, MultiCoilKSpace):   # Re S^H F^-1 y, and fastMRI's RSS of the coil images
            out = {"adjoint": AdjointInput(operator)(y), "zero_filled_rss": center_crop(rss(ifft2c(y)), operator.in_shape[1:])}
        else:
            out = {"adjoint": AdjointInput(operator)(y)}
        # multi-coil: the least-squares solution by conjugate gradients is SENSE (and TV below SENSE-TV)
        out["sense" if isinstance(operator, MultiCoilKSpace) else "pseudo_inverse"] = operator.at(y).pseudo_inverse(y)
        methods = weighted_methods(operator)
        for name, (mu, grid) in weights.items():
            out[weighted_name(name, mu, grid)] = methods[name](y, mu)
        return out


def baselines(operator: LinearOperator, y: torch.Tensor, train_y: torch.Tensor, train_x: torch.Tensor) -> dict:
    """``reconstructions`` of y with weights fitted on (train_y, train_x)."""
    return reconstructions(operator, y, fit_weights(operator, train_y, train_x))
