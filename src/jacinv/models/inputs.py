"""Fixed (untrained) first stages that turn a measurement y into an image-shaped network input.

They are part of the model, so the Jacobian regularisers see the whole map y -> x_hat.
"""
from __future__ import annotations

import torch
from torch import nn

from ..operators import LinearOperator, nonzero_norm
from ..operators.fourier import complex_abs, ifft2c
from ..operators.fourier import center_crop


class AdjointInput(nn.Module):
    """y -> A^T y / ||A||^2, (B, *A.out_shape) -> (B, *A.in_shape); the scaling makes it
    s^2 A^T (nearest-neighbour-like upsampling) for blur + decimation by s, and A^T for MRI."""

    def __init__(self, operator: LinearOperator):
        super().__init__()
        self.operator = operator
        self.scale = 1.0 / nonzero_norm(operator, "the network's input stage") ** 2

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.at(y).adjoint(y) * self.scale


class ComplexToChannels(nn.Module):
    """(B, C, H, W, 2) -> (B, 2C, H, W): real and imaginary parts as channels."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.permute(0, 1, 4, 2, 3).reshape(z.shape[0], -1, z.shape[2], z.shape[3])


class ChannelsToComplex(nn.Module):
    """(B, 2C, H, W) -> (B, C, H, W, 2), the inverse of :class:`ComplexToChannels`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c2, h, w = x.shape
        return x.reshape(b, c2 // 2, 2, h, w).permute(0, 1, 3, 4, 2)


class ZeroFilledMagnitude(nn.Module):
    """y -> |F^-1 y| centre-cropped to ``crop`` (h, w) (default: no crop), the zero-filled magnitude
    image, (B, C, H, W, 2) -> (B, C, h, w); with ``coils`` the root-sum-of-squares over the C coil images,
    (B, 1, h, w) (fastMRI's multi-coil zero-filled image)."""

    def __init__(self, crop: tuple[int, int] | None = None, coils: bool = False):
        super().__init__()
        self.crop, self.coils = crop, coils

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        image = complex_abs(ifft2c(y))
        if self.coils:
            image = image.pow(2).sum(1, keepdim=True).sqrt()
        return image if self.crop is None else center_crop(image, self.crop)


class Reconstructor(nn.Module):
    """``post(net(pre(y)))``: a trainable ``net`` between fixed input/output stages."""

    def __init__(self, net: nn.Module, pre: nn.Module | None = None, post: nn.Module | None = None):
        super().__init__()
        self.pre = pre if pre is not None else nn.Identity()
        self.net = net
        self.post = post if post is not None else nn.Identity()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.post(self.net(self.pre(y)))
