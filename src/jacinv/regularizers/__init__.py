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

Every weight is a float >= 0 or "auto" (seed Algorithm 4, default).  Plug-ins register more names with
``register_regularizer`` (``registry``); the spectral names take the estimator presets of PRESETS.
"""
from __future__ import annotations

from .._checks import choice
from ..operators import LinearOperator
from .baselines import DataGrad, WeightDecay, WeightSpectralNorm, l2_distance
from .frobenius import FrobeniusJacobianPenalty
from .norms import jacobian_frobenius_sq, jacobian_spectral_norm, power_iteration, with_and_without_operator
from .products import JacobianProducts, refuse_batch_coupling
from .registry import (PRESETS, Preset, RegularizerSpec, j_domain_names, names_weighted_by, register_regularizer,
                       registered_regularizers, regularizer_spec, spectral_names, with_preset)
from .regularizer import AUTO, Regularizer, auto_weight
from .spectral import SpectralJacobianPenalty

_SPECTRAL_OPTIONS = ("iters", "cold_iters", "candidates", "refresh", "store_dtype", "store_device", "seed",
                     "jvp_mode", "chunk_rows", "krylov", "screen", "focus")
_FROBENIUS_OPTIONS = ("n_projections", "projection", "seed")
_WEIGHT_OF = {"sja": "lambda_ja", "sj": "lambda_j", "fja": "lambda_ja", "fj": "lambda_j"}


J_DOMAINS = ("all", "measured")
#: how the ||J|| term reads in each j_domain (console, summary table, stability report)
J_NORM = {"all": "||J||", "measured": "||J P||"}


def _jacobian_terms(terms: tuple, penalty: type):
    """A builder of the Jacobian penalty ``penalty`` on ``terms`` (names ending in "ja": J A; else J, or J P with
    ``j_operator`` P)."""
    def build(operator, j_operator=None, **options):
        return [penalty({t: (operator if t.endswith("ja") else j_operator) for t in terms}, **options)]
    return build


register_regularizer("none", lambda operator: [], weights={})
register_regularizer("wd", lambda operator: [WeightDecay()], weights={"wd": "weight"})
register_regularizer("sw", lambda operator, iters=1: [WeightSpectralNorm(iters)], weights={"sw": "weight"})
for _name in ("sj", "sja", "sja+sj", "fj", "fja", "fja+fj"):
    _terms = tuple(_name.split("+"))
    _spectral = _name.startswith("s")
    register_regularizer(_name, _jacobian_terms(_terms, SpectralJacobianPenalty if _spectral else FrobeniusJacobianPenalty),
                         weights={t: _WEIGHT_OF[t] for t in _terms}, model_aware="ja" in _name, spectral=_spectral,
                         options=_SPECTRAL_OPTIONS if _spectral else _FROBENIUS_OPTIONS,
                         j_domain=any(not t.endswith("ja") for t in _terms))
register_regularizer("datagrad", lambda operator: [DataGrad()], weights={"datagrad": "weight"})
register_regularizer("spectreg", lambda operator, seed=0: [FrobeniusJacobianPenalty(
    {"spectreg": None}, n_projections=1, reduction="mean", seed=seed)], weights={"spectreg": "weight"})
#: the built-in names (plug-ins may register more: ``registered_regularizers()``)
REGULARIZERS = tuple(registered_regularizers())


def build_regularizer(name: str, operator: LinearOperator | None = None, lambda_ja=AUTO, lambda_j=AUTO,
                      weight=AUTO, kappa: float = 20.0, every: int | None = None, target_ja: float | None = None,
                      target_j: float | None = None, preset: str | None = None, j_domain: str = "all",
                      **options) -> Regularizer:
    """Build the regulariser ``name`` (see the module docstring; plug-ins add names with ``register_regularizer``).

    ``every`` = k > 1 evaluates the penalty on every k-th training step only, with its weights
    multiplied by k (lazy regularisation; see ``Regularizer``); default 1, or the preset's.

    ``preset`` (spectral names only): a named estimator setting of PRESETS ("exact", "fast", "whole-batch"):
    its ``every`` and options, which ``every`` and ``options`` given here may add to but not contradict.

    ``target_ja`` / ``target_j`` = L (spectral names only) ask for max ||J A|| <= L / max ||J|| <= L
    instead of small norms: only the excess over L is penalised, with a multiplier raised while it persists
    (``Regularizer``'s ``targets``); to first order a target L on ||J|| bounds the worst-case output change
    under a measurement perturbation of norm r by L r.

    ``j_domain`` "measured" (names with a ||J|| term) takes that term on the perturbations a measurement can carry:
    ||J(y) P|| with P = ``operator.measured_projector()`` (k-space masks: the sampled positions; every entry for
    other operators, where it is J itself), so a target on it bounds the worst-case output change under
    perturbations a scanner can record, as ``evaluate.py --stability`` attacks; "all" (default): J itself.

    ``operator`` (A) is required by the model-aware names (sja, fja, ...) and by ``j_domain="measured"``.  ``options``
    tune the estimators: spectral (iters, cold_iters, candidates, refresh, store_dtype,
    store_device, seed, jvp_mode, chunk_rows, krylov, screen, focus), Frobenius (n_projections, projection, seed), sw (iters).
    """
    spec = regularizer_spec(name)
    if preset is not None and not spec.spectral:
        raise ValueError(f"preset {preset!r}: regularizer {name!r} is not a spectral penalty; presets set the "
                         f"spectral estimator of {list(spectral_names())}")
    every, options = with_preset(preset, every, options)
    allowed = spec.option_names()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for regularizer {name!r}; expected a subset of {list(allowed)}")
    bounds = {t: v for t, v in (("sja", target_ja), ("sj", target_j)) if v is not None}
    if bounds and (not spec.spectral or not set(bounds) <= set(spec.weights)):
        given = ", ".join(f"target_{t[1:]}={v}" for t, v in bounds.items())
        raise ValueError(f"{given}: regularizer {name!r} has no such spectral norm; a target on ||J A|| needs one of "
                         f"{list(spectral_names('ja'))}, one on ||J|| one of {list(spectral_names('j'))}")
    if spec.model_aware and not isinstance(operator, LinearOperator):
        raise ValueError(f"regularizer {name!r} is model-aware and needs operator= (a LinearOperator), "
                         f"got {type(operator).__name__}")
    choice(j_domain, "j_domain", J_DOMAINS)
    if j_domain != "all":
        if not spec.j_domain:
            raise ValueError(f"j_domain={j_domain!r}: regularizer {name!r} has no ||J|| term to restrict; expected one "
                             f"of {list(j_domain_names())}")
        if not isinstance(operator, LinearOperator):
            raise ValueError(f"j_domain={j_domain!r} needs operator= (a LinearOperator, whose measured entries it "
                             f"keeps), got {type(operator).__name__}")
        options = {**options, "j_operator": operator.measured_projector()}
    given = {"lambda_ja": lambda_ja, "lambda_j": lambda_j, "weight": weight}
    terms = spec.build(operator, **options)
    return Regularizer(name, list(terms), {t: given[k] for t, k in spec.weights.items()}, kappa, every, bounds)


__all__ = [
    "build_regularizer", "Regularizer", "REGULARIZERS", "AUTO", "auto_weight", "jacobian_spectral_norm",
    "jacobian_frobenius_sq", "power_iteration", "with_and_without_operator", "JacobianProducts", "refuse_batch_coupling",
    "SpectralJacobianPenalty", "FrobeniusJacobianPenalty", "WeightDecay", "WeightSpectralNorm", "DataGrad",
    "l2_distance", "register_regularizer", "registered_regularizers", "regularizer_spec", "RegularizerSpec",
    "PRESETS", "Preset", "names_weighted_by", "spectral_names", "with_preset", "j_domain_names", "J_DOMAINS", "J_NORM",
]
