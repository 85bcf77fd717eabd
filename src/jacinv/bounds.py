"""The generalisation bound of a trained reconstruction network, and the estimates it needs.

Seed 002, Theorem 3: with probability 1 - delta, for every gamma > 0,

    GE <= 2 (1 + L_fa) gamma + 2 L_f eps + M sqrt((2 N(gamma) log 2 + 2 log(1/delta)) / m)

(robustness, noise and sample terms), with L_fa = sup ||J(y) A||_2 and L_f = sup ||J(y)||_2
over the convex hull of the measurements, eps the noise radius, M the largest loss, m the
training-set size and N(gamma) the covering number of the signal set; for a C_M-regular
k-dimensional manifold N(gamma) <= (2 C_M / gamma)^k.  Seed 000, Theorem 2, the regression
version without an operator: GE <= (1 + L_f) psi + M sqrt((2 N(psi / 2) log 2 + 2 log(1/delta)) / m).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.spatial import cKDTree

from ._checks import finite_number, positive_int
from .regularizers import jacobian_spectral_norm, with_and_without_operator
from .regularizers.norms import jacobian_input_shape, random_unit_vectors
from .regularizers.products import JacobianProducts


def log_covering_number(gamma: float, manifold_constant: float, intrinsic_dim: float) -> float:
    """log N(gamma) = k log(2 C_M / gamma), floored at log 1 = 0 (one ball always suffices eventually)."""
    finite_number(gamma, "gamma", low=0.0, low_open=True)
    finite_number(manifold_constant, "manifold_constant", low=0.0, low_open=True)
    finite_number(intrinsic_dim, "intrinsic_dim", low=0.0, low_open=True)
    return max(0.0, intrinsic_dim * math.log(2.0 * manifold_constant / gamma))


def covering_number(gamma: float, manifold_constant: float, intrinsic_dim: float) -> float:
    """N(gamma) <= (2 C_M / gamma)^k for a C_M-regular k-dimensional manifold (at least 1; inf on overflow)."""
    log_n = log_covering_number(gamma, manifold_constant, intrinsic_dim)
    return math.exp(log_n) if log_n < 700 else math.inf


@dataclass
class Bound:
    total: float
    gamma: float
    vacuous: bool
    terms: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"total": self.total, "gamma": self.gamma, "vacuous": self.vacuous, "terms": self.terms,
                "inputs": self.inputs}


def _sample_term(log_n: float, max_loss: float, n_train: int, delta: float) -> float:
    """M sqrt((2 N log 2 + 2 log(1/delta)) / m), computed without overflowing N."""
    if log_n > 700:
        return math.inf
    return max_loss * math.sqrt((2.0 * math.exp(log_n) * math.log(2.0) + 2.0 * math.log(1.0 / delta)) / n_train)


def _minimise(total, gamma_max: float) -> float:
    """Minimiser of a convex function of gamma on (0, gamma_max]: a log grid, then a bounded refinement."""
    grid = np.logspace(math.log10(gamma_max) - 12, math.log10(gamma_max), 600)
    values = np.array([total(g) for g in grid])
    k = int(np.nanargmin(values))
    lo, hi = grid[max(0, k - 1)], grid[min(len(grid) - 1, k + 1)]
    if lo == hi or not math.isfinite(values[k]):
        return float(grid[k])
    res = minimize_scalar(lambda t: total(math.exp(t)), bounds=(math.log(lo), math.log(hi)), method="bounded",
                          options={"xatol": 1e-10})
    return float(math.exp(res.x)) if res.fun <= values[k] else float(grid[k])


def generalization_bound(lip_fa: float, lip_f: float, noise_radius: float, max_loss: float, n_train: int,
                         delta: float = 0.05, manifold_constant: float = 1.0, intrinsic_dim: float = 1.0,
                         gamma: float | None = None) -> Bound:
    """Seed 002 Theorem 3 at ``gamma`` (None: the minimising gamma).  ``vacuous`` when total >= M,
    the trivial bound for a loss in [0, M]."""
    finite_number(lip_fa, "lip_fa", low=0.0)
    finite_number(lip_f, "lip_f", low=0.0)
    finite_number(noise_radius, "noise_radius", low=0.0)
    finite_number(max_loss, "max_loss", low=0.0, low_open=True)
    positive_int(n_train, "n_train")
    finite_number(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)

    def terms(g: float) -> dict:
        return {"robustness": 2.0 * (1.0 + lip_fa) * g, "noise": 2.0 * lip_f * noise_radius,
                "sample": _sample_term(log_covering_number(g, manifold_constant, intrinsic_dim), max_loss,
                                       n_train, delta)}

    if gamma is None:
        gamma = _minimise(lambda g: sum(terms(g).values()), 2.0 * manifold_constant)
    else:
        finite_number(gamma, "gamma", low=0.0, low_open=True)
    t = terms(gamma)
    total = sum(t.values())
    inputs = dict(lip_fa=lip_fa, lip_f=lip_f, noise_radius=noise_radius, max_loss=max_loss, n_train=n_train,
                  delta=delta, manifold_constant=manifold_constant, intrinsic_dim=intrinsic_dim)
    return Bound(total, gamma, total >= max_loss, t, inputs)


def regression_bound(lip_f: float, max_loss: float, n_train: int, delta: float = 0.05,
                     manifold_constant: float = 1.0, intrinsic_dim: float = 1.0, psi: float | None = None) -> Bound:
    """Seed 000 Theorem 2: (1 + L_f) psi + M sqrt((2 N(psi / 2) log 2 + 2 log(1/delta)) / m)."""
    finite_number(lip_f, "lip_f", low=0.0)
    finite_number(max_loss, "max_loss", low=0.0, low_open=True)
    positive_int(n_train, "n_train")
    finite_number(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)

    def terms(p: float) -> dict:
        return {"robustness": (1.0 + lip_f) * p,
                "sample": _sample_term(log_covering_number(p / 2, manifold_constant, intrinsic_dim), max_loss,
                                       n_train, delta)}

    psi = _minimise(lambda p: sum(terms(p).values()), 4.0 * manifold_constant) if psi is None else psi
    t = terms(psi)
    total = sum(t.values())
    return Bound(total, psi, total >= max_loss, t, dict(lip_f=lip_f, max_loss=max_loss, n_train=n_train,
                                                        delta=delta, manifold_constant=manifold_constant,
                                                        intrinsic_dim=intrinsic_dim))


# ----------------------------------------------------------------- covering and dimension from data
def greedy_net(points, gamma: float) -> np.ndarray:
    """Indices of a greedy gamma-net of ``points`` (N, D): every point lies within ``gamma`` of a chosen
    one, and chosen points are more than ``gamma`` apart.  Its size is an exact count of this cover of
    the sample (at most N(gamma / 2) of the underlying set), not of the set the sample comes from."""
    pts = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    finite_number(gamma, "gamma", low=0.0, low_open=True)
    tree = cKDTree(pts)
    covered = np.zeros(len(pts), dtype=bool)
    centres = []
    for i in range(len(pts)):
        if not covered[i]:
            centres.append(i)
            covered[tree.query_ball_point(pts[i], gamma)] = True
    return np.asarray(centres)


def twonn_dimension(points) -> float:
    """Intrinsic dimension by TwoNN (Facco et al. 2017): MLE d = N / sum log(r2 / r1) from each
    point's two nearest-neighbour distances.  Duplicate points are ignored."""
    pts = np.unique(np.asarray(points, dtype=np.float64).reshape(len(points), -1), axis=0)
    if len(pts) < 3:
        raise ValueError(f"twonn_dimension needs at least 3 distinct points, got {len(pts)}")
    dist, _ = cKDTree(pts).query(pts, k=3)
    mu = dist[:, 2] / dist[:, 1]
    return float(len(mu) / np.log(mu).sum())


def fit_manifold(points, gammas=None) -> tuple[float, float]:
    """(C_M, k) for the model N(gamma) = (2 C_M / gamma)^k: k by TwoNN; C_M the largest value of
    gamma / 2 * |greedy net(gamma)|^(1/k) over a few radii (the most conservative fit)."""
    pts = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    k = twonn_dimension(pts)
    diameter = float(np.linalg.norm(pts.max(0) - pts.min(0)))
    gammas = gammas if gammas is not None else diameter * np.array([0.1, 0.2, 0.4])
    c_m = max(g / 2 * len(greedy_net(pts, g)) ** (1.0 / k) for g in gammas)
    return float(c_m), k


# ----------------------------------------------------------------- Lipschitz constants of a network
def _hull_ascent(model, operator, ys: torch.Tensor, steps: int, lr: float, iters: int) -> float:
    """Gradient ascent of ||J(y) A|| over convex combinations y = sum_i w_i ys_i (w on the simplex,
    softmax-parametrised), so every visited point stays in the convex hull; returns the best value."""
    logits = torch.zeros(ys.shape[0], dtype=ys.dtype, requires_grad=True)
    best = 0.0
    opt = torch.optim.Adam([logits], lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        w = torch.softmax(logits, 0)
        y = (w.view(-1, *[1] * (ys.dim() - 1)) * ys).sum(0, keepdim=True)
        sigma, v = jacobian_spectral_norm(model, y.detach(), operator, iters=iters, generator=g, return_vectors=True)
        best = max(best, float(sigma.detach()))
        # d sigma / d y: one evaluation of ||J(y) A v|| at the converged v, differentiated in y
        products = JacobianProducts(model, y.detach())
        value = products.jvp(operator(v) if operator is not None else v, create_graph=True).flatten().norm()
        (grad_y,) = torch.autograd.grad(value, products.y, allow_unused=True)
        if grad_y is None:  # J does not depend on y (a linear map): nothing to climb
            break
        opt.zero_grad()
        y.backward(-grad_y)
        opt.step()
    return best


def product_of_layer_norms(model) -> float | None:
    """Upper bound on the Lipschitz constant of a feed-forward stack of Linear layers and 1-Lipschitz
    activations (ReLU, LeakyReLU, Tanh): the product of the layers' spectral norms; None for other models."""
    layers = [m for m in model.modules() if not list(m.children())]
    allowed = (torch.nn.Linear, torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.Tanh, torch.nn.Identity,
               torch.nn.Flatten, torch.nn.Unflatten)
    if not layers or not all(isinstance(m, allowed) for m in layers):
        return None
    return float(np.prod([float(torch.linalg.matrix_norm(m.weight.detach().double(), ord=2))
                          for m in layers if isinstance(m, torch.nn.Linear)]))


DRAW_BLOCK = 64  # start vectors are drawn per block of this many samples, whatever ``rows`` is


def per_sample_norms(model, operator, measurements: torch.Tensor, iters: int = 30, rows: int = 64) -> torch.Tensor:
    """(B,) power-method lower bounds on ||J(y_i) A|| (||J(y_i)|| for operator None), ``rows`` samples per
    pass (memory grows with it: the training batch size is a safe choice); the result does not depend on it."""
    positive_int(rows, "rows")
    g = torch.Generator().manual_seed(0)
    out = []
    for k in range(0, len(measurements), DRAW_BLOCK):
        block = measurements[k: k + DRAW_BLOCK]
        v0 = random_unit_vectors((len(block), *jacobian_input_shape(operator, block)), block, g)
        out += [jacobian_spectral_norm(model, block[s: s + rows], operator, iters=iters, v0=v0[s: s + rows]).detach()
                for s in range(0, len(block), rows)]
    return torch.cat(out)


def estimate_lipschitz(model, operator, measurements: torch.Tensor, iters: int = 30, top: int = 4,
                       ascent_steps: int = 10, lr: float = 0.3, rows: int = 64) -> dict:
    """Lower estimates of L_fa = sup ||J(y) A|| and L_f = sup ||J(y)|| over the convex hull of the
    measurements (B, *y_shape): the largest per-sample norm, improved by gradient ascent over convex
    combinations of the ``top`` worst samples.  These are lower bounds on the suprema (the report
    says so); ``upper_*`` is the product of layer norms where that is a valid upper bound.  ``rows``: samples
    per pass of the per-sample norms."""
    model.eval()

    def lipschitz(op) -> tuple[float, np.ndarray]:
        norms = per_sample_norms(model, op, measurements, iters, rows)
        worst = measurements[norms.topk(min(top, len(norms))).indices]
        hull = _hull_ascent(model, op, worst, ascent_steps, lr, iters) if ascent_steps else 0.0
        return max(float(norms.max()), hull), norms.numpy()

    out = {}
    for key, (lip, norms) in with_and_without_operator(lipschitz, operator).items():
        out[f"lip_{key}"], out[f"per_sample_{key}"] = lip, norms
    lip_upper = product_of_layer_norms(model)
    out["upper_f"] = lip_upper
    out["upper_fa"] = lip_upper * operator.spectral_norm() if lip_upper is not None else None
    out["kind"] = "lower bounds on the suprema (max over samples and a convex-hull ascent)"
    return out


def bound_report(model, exp, delta: float, measured_gap: float, run_dir=None, max_samples: int = 512,
                 rows: int = 64) -> dict:
    """Every ingredient of Theorem 3 for a trained run, the bound, and (with ``run_dir``) bound.png.
    ``rows``: samples per pass of the Jacobian norms (the run's training batch size keeps memory in check)."""
    from .evaluation import batches
    from .noise import BoundedNoise, GaussianNoise
    from .regularizers import l2_distance

    train, test = exp.train_set, exp.test_set
    n_probe = min(max_samples, len(train))
    y_train = train.measure(torch.arange(n_probe))
    lips = estimate_lipschitz(model, exp.operator, y_train, rows=rows)
    noise = train.noise
    if isinstance(noise, BoundedNoise):
        eps, eps_note = noise.radius, "bounded noise radius"
    elif isinstance(noise, GaussianNoise):
        d = math.prod(exp.operator.out_shape)
        eps = noise.sigma * (math.sqrt(d) + math.sqrt(2 * math.log(1 / delta)))
        eps_note = "Gaussian noise: a radius exceeded with probability <= delta (the theorem assumes bounded noise)"
    else:
        eps, eps_note = 0.0, "noise-free"
    with torch.no_grad():
        losses = torch.cat([l2_distance(model(y), x) for ds in (train, test)
                            for y, x in (ds.pairs(index) for index in batches(ds, 256))])
    max_loss = float(losses.max())
    c_m, k = fit_manifold(train.targets(torch.arange(min(2000, len(train)))).numpy())
    bound = generalization_bound(lips["lip_fa"], lips["lip_f"], eps, max_loss, len(train), delta, c_m, k)
    report = {**bound.as_dict(), "measured_gap": measured_gap, "noise_note": eps_note,
              "lipschitz_kind": lips["kind"], "upper_fa": lips["upper_fa"], "upper_f": lips["upper_f"],
              "max_loss_kind": "largest l2 loss observed on train and test (empirical M)",
              "covering_kind": f"C_M = {c_m:.4g}, k = {k:.3g} fitted by TwoNN and greedy nets on the training signals"}
    if run_dir is not None:
        y_test = test.measure(torch.arange(min(max_samples, len(test))))
        test_norms = with_and_without_operator(lambda op: per_sample_norms(model, op, y_test, rows=rows).numpy(), exp.operator)
        _bound_figure(report, lips, test_norms, run_dir)
    return report


def _bound_figure(report: dict, lips: dict, test_norms: dict, run_dir) -> None:
    from pathlib import Path

    from .plots import plt, save_figure

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    names = list(report["terms"]) + ["bound", "measured GE"]
    values = list(report["terms"].values()) + [report["total"], report["measured_gap"]]
    axes[0].bar(names, values, color=["C0", "C1", "C2", "C3", "k"])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("l2 loss units")
    axes[0].set_title(f"Theorem 3 terms (gamma = {report['gamma']:.3g})")
    axes[0].tick_params(axis="x", labelrotation=30)
    for ax, key, label in ((axes[1], "fa", "||J(y) A||"), (axes[2], "f", "||J(y)||")):
        ax.hist(lips[f"per_sample_{key}"], bins=30, alpha=0.6, label="train")
        ax.hist(test_norms[key], bins=30, alpha=0.6, label="test")
        ax.axvline(lips[f"lip_{key}"], color="k", ls="--", label="lower estimate of the sup (L in the bound)")
        ax.set_title(f"{label} per sample")
        ax.set_xlabel(f"{label} (power method)")
        ax.set_ylabel("samples")
        ax.legend(fontsize=7)
    save_figure(fig, Path(run_dir) / "bound.png")
