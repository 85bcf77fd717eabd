"""A network plug-in: register it, then name it in a config.

    python train.py plugins=[examples/networks.py] model.name=landweber "model.kwargs={iterations: 5}"
"""
import torch
from torch import nn

from jacinv.models import register_model


@register_model("landweber")
class LandweberNet(nn.Module):
    """K Landweber iterations x <- x - t_k A^T (A x - y) from x = 0 with learned steps t_k: a linear
    network with the operator inside, (B, *A.out_shape) -> (B, *A.in_shape)."""

    def __init__(self, operator, iterations=10):
        super().__init__()
        self.operator = operator
        self.steps = nn.Parameter(torch.full((iterations,), 1.0 / operator.spectral_norm() ** 2))

    def forward(self, y):
        x = y.new_zeros((y.shape[0], *self.operator.in_shape))
        for t in self.steps:
            x = x - t * self.operator.adjoint(self.operator(x) - y)
        return x


if __name__ == "__main__":
    from jacinv.models import build_model
    from jacinv.operators import GaussianCS

    A = GaussianCS((1, 28, 28), 160, seed=0)
    f = build_model("landweber", A, iterations=5)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        print(f"relative error of 5 Landweber steps: {float((f(A(x)) - x).norm() / x.norm()):.3f}")
