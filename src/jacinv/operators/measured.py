"""P, the orthogonal projection onto the entries of y that a measurement carries."""
from __future__ import annotations

import torch

from .base import LinearOperator


class MeasuredPart(LinearOperator):
    """P e = ``measured.measured_part(e)``, (B, *out_shape) -> (B, *out_shape), self-adjoint and idempotent
    (k-space masks: the sampled positions kept, the rest zero); ||P|| = 1.  J(y) P is the Jacobian of a
    reconstruction on the perturbations a real measurement can take (``LinearOperator.measured_projector``)."""

    spectral_norm_is_exact = True

    def __init__(self, measured: LinearOperator):
        super().__init__(measured.out_shape, measured.out_shape)
        self.measured = measured

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.measured.measured_part(e)

    def adjoint(self, e: torch.Tensor) -> torch.Tensor:
        return self.measured.measured_part(e)

    def at(self, y: torch.Tensor) -> "MeasuredPart":
        """The projection of each row's own operator (``measured.at(y)``: a mask per volume)."""
        own = self.measured.at(y)
        return self if own is self.measured else MeasuredPart(own)

    def spectral_norm(self) -> float:
        return 1.0
