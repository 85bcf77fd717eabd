"""One list of small operators feeding every parametrised operator test.

A new operator is tested by adding one line here.
"""
import torch

from jacinv.operators import (BlurDecimate, GaussianCS, Identity, KSpaceSubsample, LinearOperator,
                              MatrixOperator, MultiCoilKSpace, register_operator)


@register_operator("test_finite_difference")
class FiniteDifference(LinearOperator):
    """A plug-in defined by forward only: circular horizontal differences."""

    def __init__(self, n: int = 6):
        super().__init__(in_shape=(1, n, n), out_shape=(1, n, n))

    def forward(self, x):
        return x - torch.roll(x, 1, dims=-1)


def _signed_psf():
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 3, generator=g, dtype=torch.float64) + 0.2


OPERATOR_CASES = {
    "gaussian_cs": lambda: GaussianCS(in_shape=(1, 6, 6), n_measurements=12, seed=0),
    "gaussian_cs_wide": lambda: GaussianCS(in_shape=(20,), n_measurements=30, seed=1),
    "matrix": lambda: MatrixOperator(torch.randn(7, 12, generator=torch.Generator().manual_seed(2)), in_shape=(3, 4)),
    "blur_gaussian_x2": lambda: BlurDecimate(in_shape=(1, 8, 8), factor=2, kernel="gaussian", kernel_size=5, sigma=1.0),
    "blur_uniform_x2_rgb": lambda: BlurDecimate(in_shape=(3, 8, 6), factor=2, kernel="uniform", kernel_size=3),
    "blur_bicubic_x3": lambda: BlurDecimate(in_shape=(1, 12, 12), factor=3, kernel="bicubic"),
    "blur_signed_x2": lambda: BlurDecimate(in_shape=(1, 8, 8), factor=2, kernel=_signed_psf()),
    "blur_x1": lambda: BlurDecimate(in_shape=(1, 6, 6), factor=1, kernel="gaussian", kernel_size=3, sigma=0.7),
    "kspace_real_random": lambda: KSpaceSubsample(in_shape=(1, 8, 10), acceleration=2, center_fraction=0.1,
                                                  pattern="random", seed=0),
    "kspace_real_equispaced": lambda: KSpaceSubsample(in_shape=(2, 6, 8), acceleration=4, center_fraction=0.125,
                                                      pattern="equispaced", seed=1),
    "kspace_real_unpaired": lambda: KSpaceSubsample(in_shape=(1, 6, 8), mask=torch.tensor([0, 1, 1, 0, 0, 0, 0, 0])),
    "kspace_real_odd_unpaired": lambda: KSpaceSubsample(in_shape=(1, 5, 7), mask=torch.tensor([1, 0, 0, 0, 0, 0, 0])),
    "kspace_complex": lambda: KSpaceSubsample(in_shape=(1, 6, 8, 2), acceleration=2, center_fraction=0.25, seed=2),
    "multicoil_real": lambda: MultiCoilKSpace(in_shape=(1, 6, 8), coils=3, acceleration=2, center_fraction=0.25, seed=1),
    "multicoil_complex_full": lambda: MultiCoilKSpace(in_shape=(1, 6, 8, 2), coils=2, mask=torch.ones(8, dtype=torch.bool)),
    "identity": lambda: Identity(in_shape=(1, 4, 5)),
    "plugin_forward_only": lambda: FiniteDifference(n=6),
    "composed": lambda: BlurDecimate(in_shape=(1, 8, 8), factor=2) @ FiniteDifference(n=8),
}
