"""Operator plug-in registry: ``@register_operator(name)`` and ``build_operator(name, **kwargs)``."""
from __future__ import annotations

from .base import LinearOperator, refuse_nonlinear

_REGISTRY: dict[str, type[LinearOperator]] = {}


def register_operator(name: str):
    """Class decorator registering a LinearOperator subclass under ``name``.

    A plug-in may implement only ``forward``: the adjoint then comes from autograd and
    ``spectral_norm()`` from the power method (``spectral_norm_is_exact`` stays False).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, LinearOperator)):
            raise TypeError(f"@register_operator({name!r}) needs a LinearOperator subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"operator name {name!r} is already registered to {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        return cls

    return decorate


def build_operator(name: str, **kwargs) -> LinearOperator:
    """Instantiate the operator registered under ``name`` with ``kwargs``; a map that fails the
    linearity check (or is zero) is refused, naming it."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown operator name {name!r}; expected one of {sorted(_REGISTRY)}")
    return refuse_nonlinear(_REGISTRY[name](**kwargs), name)


def registered_operators() -> list[str]:
    return sorted(_REGISTRY)


def partially_measuring_operators() -> list[str]:
    """The registered operators whose measurements leave entries of y unrecorded (they override
    ``LinearOperator.measured_part``: k-space masks), where noise with support "measured" differs from "all"."""
    return sorted(name for name, cls in _REGISTRY.items() if not cls.measures_every_entry())
