"""Model-based networks with the forward operator inside: learned proximal gradient and MoDL.

Both act on images of the operator's input space, (B, C, H, W) or complex (B, C, H, W, 2);
their CNNs see complex images as 2C real channels.  Each starts from the scaled adjoint
A^T y / ||A||^2, a fixed linear estimate, and keeps the data term's operator in every
iteration, so the Jacobian of the whole map y -> x_hat contains A and A^T.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import finite_number, flag, positive_int
from ..operators import LinearOperator, nonzero_norm
from ..operators.base import conjugate_gradient
from .dncnn import DnCNN
from .inputs import AdjointInput, ChannelsToComplex, ComplexToChannels


def image_channels(operator: LinearOperator, name: str) -> tuple[int, bool]:
    """(CNN channels, complex?) for the operator's signal space; only images are accepted."""
    shape = operator.in_shape
    if len(shape) == 3:
        return shape[0], False
    if len(shape) == 4 and shape[-1] == 2:
        return 2 * shape[0], True
    raise ValueError(f"model {name!r} needs an operator on images, in_shape (C, H, W) or (C, H, W, 2); "
                     f"got in_shape {shape}")


def image_cnn(operator: LinearOperator, name: str, depth: int, features: int, norm: str) -> nn.Module:
    """A residual DnCNN x -> x - r(x) on the operator's signal space (complex images as channels)."""
    channels, is_complex = image_channels(operator, name)
    cnn = DnCNN(channels=channels, depth=depth, features=features, norm=norm)
    return nn.Sequential(ComplexToChannels(), cnn, ChannelsToComplex()) if is_complex else cnn


class UnrolledProximalGradient(nn.Module):
    """Learned proximal gradient: x_0 = A^T y / ||A||^2, then for k = 1..K

        z_k = x_{k-1} - t_k A^T (A x_{k-1} - y)          (gradient step on 1/2 ||A x - y||^2)
        x_k = z_k - R_k(z_k)                              (learned residual CNN: a DnCNN)

    Steps t_k > 0 are learned (as log t_k), initialised at 1 / ||A||^2 from the operator's
    exact spectral norm.  ``shared`` uses one CNN for every iteration.  Parameters with the
    defaults (K 5, depth 5, 32 features, 1 channel): 5 x 28,353 + 5 = 141,770; shared 28,358.
    """

    def __init__(self, operator: LinearOperator, iterations: int = 5, shared: bool = False, depth: int = 5,
                 features: int = 32, norm: str = "none"):
        super().__init__()
        positive_int(iterations, "iterations")
        shared = flag(shared, "shared")
        self.operator = operator
        self.start = AdjointInput(operator)
        n_cnns = 1 if shared else iterations
        self.cnns = nn.ModuleList([image_cnn(operator, "unrolled", depth, features, norm) for _ in range(n_cnns)])
        self.iterations = iterations
        self.log_steps = nn.Parameter(torch.full((iterations,), -2.0 * math.log(nonzero_norm(operator, "unrolled"))))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x = self.start(y)
        steps = self.log_steps.exp()
        op = self.operator.at(y)
        for k in range(self.iterations):
            z = x - steps[k] * op.adjoint(op(x) - y)
            x = self.cnns[k % len(self.cnns)](z)
        return x


class MoDL(nn.Module):
    """MoDL (Aggarwal, Mani and Jacob 2019): a shared CNN denoiser D and a data-consistency step

        x_k = (A^T A + mu I)^-1 (A^T y + mu D(x_{k-1})),    k = 1..K, from x_0 = A^T y / ||A||^2,

    solved as x_k = z + (A^T A + mu I)^-1 A^T (y - A z), z = D(x_{k-1}) (CG started at z), by
    ``cg_iters`` differentiable conjugate-gradient steps on ``operator.gram``; mu > 0 is
    learned (as log mu), initialised at ``mu`` ||A||^2.  D is a residual DnCNN.  Parameters with
    the defaults (depth 5, 32 features, 1 channel): 28,354.
    """

    def __init__(self, operator: LinearOperator, iterations: int = 5, cg_iters: int = 10, mu: float = 0.05,
                 depth: int = 5, features: int = 32, norm: str = "none"):
        super().__init__()
        positive_int(iterations, "iterations")
        self.cg_iters = positive_int(cg_iters, "cg_iters")
        finite_number(mu, "mu", low=0.0, low_open=True)
        self.operator = operator
        self.start = AdjointInput(operator)
        self.denoiser = image_cnn(operator, "modl", depth, features, norm)
        self.iterations = iterations
        self.log_mu = nn.Parameter(torch.tensor(math.log(mu * nonzero_norm(operator, "modl") ** 2)))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        mu = self.log_mu.exp()
        x = self.start(y)
        op = self.operator.at(y)
        normal = lambda v: op.gram(v) + mu * v  # noqa: E731
        for _ in range(self.iterations):
            z = self.denoiser(x)
            x = z + conjugate_gradient(normal, op.adjoint(y - op(z)), iters=self.cg_iters, tol=0.0)
        return x
