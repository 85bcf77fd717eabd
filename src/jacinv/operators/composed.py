"""Composition of linear operators, A @ B."""
from __future__ import annotations

import torch

from .base import LinearOperator


class ComposedOperator(LinearOperator):
    """x -> outer(inner(x)); ``spectral_norm()`` is a power-method estimate and
    ``spectral_norm_upper_bound()`` the product of the factors' norms."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator):
        for name, op in (("outer", outer), ("inner", inner)):
            if not isinstance(op, LinearOperator):
                raise TypeError(f"{name} must be a LinearOperator, got {type(op).__name__}")
        if inner.out_shape != outer.in_shape:
            raise ValueError(
                f"cannot compose: inner.out_shape {inner.out_shape} != outer.in_shape {outer.in_shape}")
        super().__init__(inner.in_shape, outer.out_shape)
        self.outer, self.inner = outer, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))

    def spectral_norm_upper_bound(self) -> float:
        """||outer|| * ||inner|| >= ||outer @ inner||."""
        return self.outer.spectral_norm() * self.inner.spectral_norm()
