"""Tour of jacinv's forward operators: shapes, exact spectral norms, adjoint checks, a plug-in.

    python examples/operators.py
"""
import torch

from jacinv.noise import BoundedNoise
from jacinv.operators import (BlurDecimate, GaussianCS, Identity, KSpaceSubsample, LinearOperator,
                              build_operator, check_adjoint, register_operator)


@register_operator("horizontal_gradient")
class HorizontalGradient(LinearOperator):
    """A plug-in: only forward is written; the adjoint comes from autograd."""

    def __init__(self, in_shape=(1, 32, 32)):
        super().__init__(in_shape=in_shape, out_shape=in_shape)

    def forward(self, x):
        return x - torch.roll(x, 1, dims=-1)


def main():
    operators = {
        "GaussianCS q=160": GaussianCS(in_shape=(1, 28, 28), n_measurements=160, seed=0),
        "BlurDecimate x2": BlurDecimate(in_shape=(1, 64, 64), factor=2, kernel="gaussian", kernel_size=5, sigma=1.0),
        "KSpaceSubsample 4x": KSpaceSubsample(in_shape=(1, 64, 64), acceleration=4, center_fraction=0.08, seed=0),
        "Identity": Identity(in_shape=(1, 64, 64)),
        "plug-in gradient": build_operator("horizontal_gradient", in_shape=(1, 32, 32)),
    }
    print(f"{'operator':22s} {'in_shape':>14s} {'out_shape':>16s} {'||A||':>8s} {'exact':>6s} {'power':>8s} {'adjoint err':>11s}")
    for name, op in operators.items():
        print(f"{name:22s} {str(op.in_shape):>14s} {str(op.out_shape):>16s} {op.spectral_norm():8.4f} "
              f"{str(op.spectral_norm_is_exact):>6s} {op.estimate_spectral_norm(iters=200):8.4f} {check_adjoint(op):11.1e}")
    cs = operators["GaussianCS q=160"]
    print(f"\nDavidson-Szarek bound on ||A|| (99%): {cs.spectral_norm_bound(0.99):.4f}")
    x = torch.rand(4, *cs.in_shape, generator=torch.Generator().manual_seed(0))
    noise = BoundedNoise(radius=0.3, mode="sphere").sample((4, *cs.out_shape), seed=0)
    y = cs(x) + noise
    print(f"noise norms per sample: {noise.flatten(1).norm(dim=1).tolist()}")
    print(f"relative error of A^+ y: {float((cs.pseudo_inverse(y) - x).norm() / x.norm()):.3f}")


if __name__ == "__main__":
    main()
