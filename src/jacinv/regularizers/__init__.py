"""Jacobian regularisers: model-aware spectral / Frobenius penalties and the baselines they are compared with.

Names for ``build_regularizer``:

    none       no penalty
    wd         weight decay, sum ||W||_F^2                              weight=
    sw         sum of layer operator norms (spectral norm of weights)    weight=
    sj         max_i ||J(y_i)||_2                                       lambda_j=
    sja        max_i ||J(y_i) A||_2                                     lambda_ja=
    sja+sj     both                                                     lambda_ja=, lambda_j=
    fj         sum_i ||J(y_i)||_F^2                                     lambda_j=
    fja        sum_i ||J(y_i) A||_F^2                                   lambda_ja=
    fja+fj     both                                                     lambda_ja=, lambda_j=
    datagrad   mean_i ||d l_i / d y_i||^2 (double backpropagation)      weight=
    spectreg   mean_i ||J(y_i)^T r||^2, r ~ N(0, I)                     weight=

Every weight is a float >= 0 or "auto" (seed Algorithm 4, default).
"""
from __future__ import annotations

from ..operators import LinearOperator
from .baselines import DataGrad, WeightDecay, WeightSpectralNorm, l2_distance
from .frobenius import FrobeniusJacobianPenalty
from .norms import jacobian_frobenius_sq, jacobian_spectral_norm, power_iteration, with_and_without_operator
from .products import JacobianProducts, refuse_batch_coupling
from .regularizer import AUTO, Regularizer, auto_weight
from .spectral import SpectralJacobianPenalty

REGULARIZERS = ("none", "wd", "sw", "sj", "sja", "sja+sj", "fj", "fja", "fja+fj", "datagrad", "spectreg")
_JACOBIAN_TARGETS = {"sj": ("sj",), "sja": ("sja",), "sja+sj": ("sja", "sj"),
                     "fj": ("fj",), "fja": ("fja",), "fja+fj": ("fja", "fj")}
_SPECTRAL_OPTIONS = ("iters", "cold_iters", "candidates", "refresh", "store_dtype", "store_device", "seed",
                     "jvp_mode", "chunk_rows", "krylov", "screen", "focus")
_FROBENIUS_OPTIONS = ("n_projections", "projection", "seed")


def build_regularizer(name: str, operator: LinearOperator | None = None, lambda_ja=AUTO, lambda_j=AUTO,
                      weight=AUTO, kappa: float = 20.0, every: int = 1, target_ja: float | None = None,
                      target_j: float | None = None, **options) -> Regularizer:
    """Build the regulariser ``name`` (see the module docstring).

    ``every`` = k > 1 evaluates the penalty on every k-th training step only, with its weights
    multiplied by k (lazy regularisation; see ``Regularizer``).

    ``target_ja`` / ``target_j`` = L (spectral names only) ask for max ||J A|| <= L / max ||J|| <= L
    instead of small norms: only the excess over L is penalised, with a multiplier raised while it persists
    (``Regularizer``'s ``targets``); to first order a target L on ||J|| bounds the worst-case output change
    under a measurement perturbation of norm r by L r.

    ``operator`` (A) is required by the model-aware names (sja, fja, ...).  ``options``
    tune the estimators: spectral (iters, cold_iters, candidates, refresh, store_dtype,
    store_device, seed, jvp_mode, chunk_rows, krylov, screen, focus), Frobenius (n_projections, projection, seed), sw (iters).
    """
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer name {name!r}; expected one of {list(REGULARIZERS)}")
    allowed = {"s": _SPECTRAL_OPTIONS, "f": _FROBENIUS_OPTIONS}.get(name[0], ()) if name in _JACOBIAN_TARGETS else (
        ("iters",) if name == "sw" else ("seed",) if name == "spectreg" else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for regularizer {name!r}; expected a subset of {list(allowed)}")
    bounds = {t: v for t, v in (("sja", target_ja), ("sj", target_j)) if v is not None}
    if bounds and (name not in ("sj", "sja", "sja+sj") or not set(bounds) <= set(_JACOBIAN_TARGETS[name])):
        given = ", ".join(f"target_{t[1:]}={v}" for t, v in bounds.items())
        raise ValueError(f"{given}: regularizer {name!r} has no such spectral norm; a target on ||J A|| needs sja or "
                         "sja+sj, one on ||J|| needs sj or sja+sj")
    if name == "none":
        return Regularizer(name, [], {}, kappa, every)
    if name in _JACOBIAN_TARGETS:
        term_names = _JACOBIAN_TARGETS[name]
        if any(t.endswith("ja") for t in term_names) and not isinstance(operator, LinearOperator):
            raise ValueError(f"regularizer {name!r} is model-aware and needs operator= (a LinearOperator), "
                             f"got {type(operator).__name__}")
        targets = {t: (operator if t.endswith("ja") else None) for t in term_names}
        weights = {t: (lambda_ja if t.endswith("ja") else lambda_j) for t in term_names}
        penalty = (SpectralJacobianPenalty if name[0] == "s" else FrobeniusJacobianPenalty)(targets, **options)
        return Regularizer(name, [penalty], weights, kappa, every, bounds)
    if name == "spectreg":
        penalty = FrobeniusJacobianPenalty({"spectreg": None}, n_projections=1, reduction="mean", **options)
        return Regularizer(name, [penalty], {"spectreg": weight}, kappa, every)
    term = {"wd": WeightDecay, "sw": WeightSpectralNorm, "datagrad": DataGrad}[name](**options)
    return Regularizer(name, [term], {name: weight}, kappa, every)


__all__ = [
    "build_regularizer", "Regularizer", "REGULARIZERS", "AUTO", "auto_weight", "jacobian_spectral_norm",
    "jacobian_frobenius_sq", "power_iteration", "with_and_without_operator", "JacobianProducts", "refuse_batch_coupling",
    "SpectralJacobianPenalty", "FrobeniusJacobianPenalty", "WeightDecay", "WeightSpectralNorm", "DataGrad",
    "l2_distance",
]
