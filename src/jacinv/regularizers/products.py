"""Jacobian-vector and vector-Jacobian products of a network y -> f(y), never forming J.

``JacobianProducts`` evaluates f once on a detached copy of y and answers any number
of products on that graph.  ``operator`` composes them with A: the products are then
those of J A (signal space -> output space) instead of J (measurements -> output).
The forward-mode product uses the double-vjp trick: J t = d/dd <J^T d, t>, which on
this CPU beat torch.func.jvp.
"""
from __future__ import annotations

import torch
from torch import nn

from ..operators import LinearOperator


def refuse_batch_coupling(model) -> None:
    """Per-sample Jacobians need f(y)_i to depend on y_i only: refuse BatchNorm in train mode."""
    if not isinstance(model, nn.Module):
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"model layer {name or type(model).__name__!r} is {type(module).__name__} in train mode, which "
                "couples the samples of a batch, so per-sample Jacobians are undefined; use a per-sample "
                "normalisation (jacinv's models take norm='group' or 'instance'), or call model.eval()")


class JacobianProducts:
    """Products with J(y) (or J(y) A) for a batch y of shape (B, *measurement_shape).

    Args:
        f: the reconstruction map, (B, *y_shape) -> (B, *x_shape).
        y: measurements; detached internally.

    Each product takes ``create_graph``: True keeps its graph so the result is
    differentiable with respect to f's parameters (at the price of a double backward);
    False gives a detached-quality result for power iterations.
    """

    def __init__(self, f, y: torch.Tensor):
        self.y = y.detach().requires_grad_(True)
        with torch.enable_grad():
            self.out = f(self.y)
        if not self.out.requires_grad:
            raise ValueError("f(y) does not depend on y through autograd; expected a differentiable model")
        self._dummy = None

    def input_shape(self, operator: LinearOperator | None = None) -> tuple[int, ...]:
        """Shape of v in J A v (or J v), without the batch dimension."""
        return operator.in_shape if operator is not None else tuple(self.y.shape[1:])

    def jvp(self, v: torch.Tensor, operator: LinearOperator | None = None, create_graph: bool = False) -> torch.Tensor:
        """J A v (or J v): (B, *input_shape) -> (B, *out_shape)."""
        t = operator(v) if operator is not None else v
        with torch.enable_grad():
            if self._dummy is None:
                self._dummy = torch.zeros_like(self.out, requires_grad=True)
                (self._jt_dummy,) = torch.autograd.grad(self.out, self.y, self._dummy, create_graph=True)
            (jv,) = torch.autograd.grad(self._jt_dummy, self._dummy, t, retain_graph=True,
                                        create_graph=create_graph)
        return jv

    def vjp(self, u: torch.Tensor, operator: LinearOperator | None = None, create_graph: bool = False) -> torch.Tensor:
        """A^T J^T u (or J^T u): (B, *out_shape) -> (B, *input_shape)."""
        with torch.enable_grad():
            (jtu,) = torch.autograd.grad(self.out, self.y, u, retain_graph=True, create_graph=create_graph)
        return operator.adjoint(jtu) if operator is not None else jtu
