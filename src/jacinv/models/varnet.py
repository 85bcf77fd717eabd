"""End-to-end variational network for single-coil Cartesian MRI (after fastMRI's VarNet).

Each cascade updates the k-space estimate k (B, C, H, W, 2), starting from k_0 = y:

    k <- k - eta_t M (k - y) - F R_t(F^-1 k)

with M the column mask of y (the operator's, or each measurement's own for measured k-space: ``at(y)``),
F the centred orthonormal FFT, eta_t >= 0 a learned
data-consistency weight and R_t a U-Net on the complex image (real and imaginary parts as
channels), normalised per sample as fastMRI's NormUnet does.  The output is the operator's
``image(k)``: F^-1 k (complex images), its real part (real images), or for measured k-space the
magnitude of its centre crop to the target grid (fastMRI's output).  Single-coil: no
sensitivity maps; with ``MultiCoilKSpace`` the E2E form below, with the operator's maps.
"""
from __future__ import annotations

import torch
from torch import nn

from .._checks import positive_int
from ..mri.coils import acs_coil_images, unit_rss
from ..mri.multicoil import MultiCoilKSpace
from ..operators import KSpaceSubsample, LinearOperator
from ..operators.fourier import fft2c, ifft2c
from .inputs import ChannelsToComplex, ComplexToChannels
from .unet import UNet


class NormUNet(nn.Module):
    """U-Net on a complex image (B, C, H, W, 2): real and imaginary parts as 2C channels, each
    standardised by its per-sample mean and standard deviation, restored after the U-Net."""

    def __init__(self, coils: int, chans: int, num_pool_layers: int):
        super().__init__()
        self.to_channels, self.to_complex = ComplexToChannels(), ChannelsToComplex()
        self.unet = UNet(2 * coils, 2 * coils, chans=chans, num_pool_layers=num_pool_layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        dims = (1, 2, 3)  # per sample, real and imaginary parts apart
        mean = image.mean(dims, keepdim=True)
        std = image.std(dims, keepdim=True).clamp_min(1e-6)
        return self.to_complex(self.unet(self.to_channels((image - mean) / std))) * std + mean


class VarNet(nn.Module):
    """``cascades`` k-space cascades, each with its own U-Net (``chans`` channels at the top,
    ``num_pool_layers`` poolings) and data-consistency weight (initialised at 1).
    Parameters with the defaults (8 cascades, chans 8, 3 pools, 1 coil): 8 x 120,354 + 8 = 962,840.
    Multi-coil (``MultiCoilKSpace``): fastMRI's E2E update with coil maps S,
    k <- k - eta_t M (k - y) - S-expand F R_t(S^H F^-1 k), one U-Net on the coil-combined image.  S are the
    operator's maps (its analytic ones, or for measured k-space each slice's ACS estimate), or with ``sens_chans``
    > 0 fastMRI's sensitivity network: a U-Net (``sens_chans`` channels, ``sens_pools`` poolings) on each coil's
    ACS image, the results at unit root-sum-of-squares, trained end to end.
    """

    def __init__(self, operator: LinearOperator, cascades: int = 8, chans: int = 8, num_pool_layers: int = 3,
                 sens_chans: int = 0, sens_pools: int = 2):
        super().__init__()
        if not isinstance(operator, (KSpaceSubsample, MultiCoilKSpace)):
            raise ValueError(f"model 'varnet' needs a k-space operator (KSpaceSubsample, operator name 'kspace', or "
                             f"MultiCoilKSpace, 'multicoil_kspace'); got {type(operator).__name__} "
                             f"{operator.in_shape} -> {operator.out_shape}")
        positive_int(cascades, "cascades")
        positive_int(num_pool_layers, "num_pool_layers")
        height, width = operator.out_shape[1:3]
        if min(height, width) < 2 ** num_pool_layers:
            raise ValueError(f"image ({height}, {width}) is too small for num_pool_layers={num_pool_layers}: "
                             f"VarNet's U-Nets need H, W >= {2 ** num_pool_layers}; lower num_pool_layers")
        self.operator = operator
        self.multicoil = isinstance(operator, MultiCoilKSpace)
        channels = 1 if self.multicoil else operator.out_shape[0]   # multi-coil: the U-Nets see the combined image
        self.refiners = nn.ModuleList([NormUNet(channels, chans, num_pool_layers) for _ in range(cascades)])
        self.dc_weights = nn.Parameter(torch.ones(cascades))
        positive_int(sens_chans, "sens_chans", minimum=0)
        if sens_chans and not self.multicoil:
            raise ValueError(f"sens_chans={sens_chans} learns coil maps, which need a multi-coil operator "
                             f"(multicoil_kspace); got {type(operator).__name__}")
        self.sensitivities = NormUNet(1, sens_chans, positive_int(sens_pools, "sens_pools")) if sens_chans else None

    def _operators(self, y: torch.Tensor) -> LinearOperator:
        """The batch's operators: ``operator.at(y)``, with the sensitivity net's maps when it has one."""
        op = self.operator.at(y)
        if self.sensitivities is None:
            return op
        coil_images = acs_coil_images(y)                                   # (B, coils, H, W, 2)
        b, coils = coil_images.shape[:2]
        refined = self.sensitivities(coil_images.reshape(b * coils, 1, *coil_images.shape[2:]))
        return op.with_maps(unit_rss(refined.reshape(coil_images.shape)))

    def _refined(self, op: LinearOperator, refine: nn.Module, k: torch.Tensor) -> torch.Tensor:
        """F R(F^-1 k) single-coil; F S R(S^H F^-1 k) multi-coil (``op``: the batch's operators)."""
        if not self.multicoil:
            return fft2c(refine(ifft2c(k)))
        return fft2c(op.sens_expand(refine(op.sens_reduce(ifft2c(k)))))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        op = self._operators(y)
        k = y
        for dc_weight, refine in zip(self.dc_weights, self.refiners):
            k = k - dc_weight * op.apply_mask(k - y) - self._refined(op, refine, k)
        return op.image(k)
