"""Exact Jacobians and parameter gradients for checking the matrix-free estimators on small cases."""
import torch


def grads(value, params):
    """Parameter gradients, zeros for parameters the value does not depend on (e.g. the last bias)."""
    return [torch.zeros_like(p) if g is None else g
            for p, g in zip(params, torch.autograd.grad(value, params, retain_graph=True, allow_unused=True))]


def exact_jacobians(f, y):
    """(B, out_dim, in_dim) Jacobians, differentiable with respect to f's parameters."""
    return torch.stack([torch.autograd.functional.jacobian(lambda t: f(t[None]).reshape(-1), yi, create_graph=True)
                        .reshape(-1, yi.numel()) for yi in y])
