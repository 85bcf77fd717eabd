"""The identity operator: denoising, y = x + n."""
from __future__ import annotations

import torch

from .base import LinearOperator


class Identity(LinearOperator):
    """y = x, (B, *in_shape) -> (B, *in_shape); ||A|| = 1."""

    spectral_norm_is_exact = True

    def __init__(self, in_shape):
        super().__init__(in_shape, in_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def pseudo_inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.adjoint(y)

    def spectral_norm(self) -> float:
        return 1.0
