"""Regulariser registry: ``register_regularizer(name, build, weights=...)`` and named estimator presets.

A regulariser is a weighted sum of terms (``Regularizer``).  Registering one says how to build its term
modules and which weight each term takes:

    register_regularizer("tv_out", lambda operator, eps=1e-3: [OutputTV(eps)], weights={"tv_out": "weight"})

after which ``build_regularizer("tv_out", weight=0.1, eps=1e-2)`` and ``regularizer.name=tv_out`` in a config
(with the module in ``plugins``) work.  ``build(operator, **options)`` returns modules whose
``forward(f, y, x, index=None)`` gives ({term: differentiable scalar}, {stat: tensor}); ``weights`` maps each
term to the weight key that sets it: "lambda_ja", "lambda_j" or "weight".
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

WEIGHT_KEYS = ("lambda_ja", "lambda_j", "weight")


@dataclass(frozen=True)
class RegularizerSpec:
    """How to build a registered regulariser (see the module docstring).

    ``options``: the option names ``build`` takes (None: its keyword parameters after the operator);
    ``model_aware``: it needs the operator A; ``spectral``: its terms are batch-max spectral norms, which take
    targets (``target_ja`` / ``target_j``) and estimator presets; ``j_domain``: ``build`` takes ``j_operator=``, the
    operator its J terms act through (None: J itself; P: J P, the Jacobian on the measured entries only)."""
    build: Callable
    weights: dict = field(default_factory=dict)
    options: tuple | None = None
    model_aware: bool = False
    spectral: bool = False
    summary: str = ""
    j_domain: bool = False

    def option_names(self) -> tuple:
        if self.options is not None:
            return tuple(self.options)
        params = list(inspect.signature(self.build).parameters.values())[1:]
        return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


_REGISTRY: dict[str, RegularizerSpec] = {}


def register_regularizer(name: str, build: Callable, *, weights: dict[str, str], options: tuple | None = None,
                         model_aware: bool = False, spectral: bool = False, summary: str = "",
                         j_domain: bool = False) -> RegularizerSpec:
    """Register ``build(operator, **options) -> [term modules]`` as ``name``, each term weighted by the config key
    ``weights[term]`` (one of WEIGHT_KEYS).  A name can be registered once."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise TypeError(f"regularizer name must be a non-empty string without spaces, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"regularizer name {name!r} is already registered; choose another name")
    if not callable(build):
        raise TypeError(f"register_regularizer({name!r}, build): build must be callable (operator, **options) -> "
                        f"list of term modules, got {build!r}")
    bad = {t: k for t, k in weights.items() if k not in WEIGHT_KEYS}
    if bad:
        raise ValueError(f"register_regularizer({name!r}): weights must map each term to one of {list(WEIGHT_KEYS)}, "
                         f"got {bad}")
    spec = RegularizerSpec(build, dict(weights), None if options is None else tuple(options), model_aware, spectral,
                           summary, j_domain)
    _REGISTRY[name] = spec
    return spec


def registered_regularizers() -> list[str]:
    return list(_REGISTRY)


def regularizer_spec(name: str) -> RegularizerSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown regularizer name {name!r}; expected one of {registered_regularizers()} (or one a "
                         "plug-in registers with register_regularizer)")
    return _REGISTRY[name]


def names_weighted_by(key: str) -> tuple:
    """The registered names with a term weighted by the config key ``key``."""
    return tuple(n for n, s in _REGISTRY.items() if key in s.weights.values())


def j_domain_names() -> tuple:
    """The registered names whose J terms can be restricted to the measured entries (``j_domain="measured"``)."""
    return tuple(n for n, s in _REGISTRY.items() if s.j_domain)


def spectral_names(norm: str | None = None) -> tuple:
    """The registered spectral names (those with a term weighted by ``norm``'s key when given: "ja" or "j")."""
    return tuple(n for n, s in _REGISTRY.items() if s.spectral and (norm is None or f"lambda_{norm}" in s.weights.values()))


@dataclass(frozen=True)
class Preset:
    """A named setting of the spectral estimator: ``every`` and estimator ``options``."""
    every: int
    options: dict
    summary: str


#: The spectral penalties' settings by name (``regularizer.preset``, ``build_regularizer(preset=...)``); the cost
#: benchmark measures these same objects.
PRESETS = {
    "exact": Preset(1, {}, "every step, the estimator's defaults (the seed's setting)"),
    "fast": Preset(4, {"iters": 3, "krylov": 4, "jvp_mode": "fastest"},
                   "every 4th step (weights x 4), 3 Krylov-refined power iterations, finite differences on conv nets"),
    "whole-batch": Preset(4, {"iters": 3, "krylov": 4, "jvp_mode": "fastest", "refresh": "all", "focus": 4},
                          "fast, with every sample of the batch re-estimated at each evaluated step (for nets with "
                          "a flat batch top)"),
}


def with_preset(preset: str | None, every: int | None, options: dict, where: str = "") -> tuple[int, dict]:
    """(every, options) of ``preset`` (None: every = 1, no options) with ``every`` and ``options`` given beside it;
    a value that contradicts the preset's is an error (``where``: how the caller names those arguments)."""
    if preset is None:
        return (1 if every is None else every), dict(options)
    if preset not in PRESETS:
        raise ValueError(f"{where}preset must be one of {list(PRESETS)}, got {preset!r}")
    chosen = PRESETS[preset]
    clashes = {k: (v, chosen.options[k]) for k, v in options.items() if k in chosen.options and v != chosen.options[k]}
    if every is not None and every != chosen.every:
        clashes = {"every": (every, chosen.every), **clashes}
    if clashes:
        said = ", ".join(f"{k}={given!r} (the preset's: {own!r})" for k, (given, own) in clashes.items())
        raise ValueError(f"{where}preset {preset!r} sets {said}; drop those or the preset")
    return chosen.every, {**chosen.options, **options}
