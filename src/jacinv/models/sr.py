"""Super-resolution networks: EDSR (baseline) and WDSR (A and B blocks), input the low-resolution image."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .._checks import choice, positive_int

SCALES = (2, 3, 4)


def _check_scale(scale: int) -> int:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    return scale


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled identity skip (EDSR)."""

    def __init__(self, features: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(features, features, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.body(x)


def pixel_shuffle_upsampler(features: int, scale: int) -> nn.Sequential:
    """x2 and x3 in one conv + PixelShuffle, x4 as two x2 stages."""
    stages = [2, 2] if scale == 4 else [scale]
    layers: list[nn.Module] = []
    for s in stages:
        layers += [nn.Conv2d(features, features * s * s, 3, padding=1), nn.PixelShuffle(s)]
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    """EDSR (Lim et al. 2017), baseline: 16 residual blocks of 64 features, pixel-shuffle tail.

    (B, C, h, w) -> (B, C, scale h, scale w).  Inputs in [0, 1] are centred by 0.5.
    Parameters (1 channel): x2 1,367,553; x3 1,552,193; x4 1,515,265; (3 channels) x2 1,369,859.
    """

    def __init__(self, channels: int = 1, scale: int = 2, n_blocks: int = 16, features: int = 64,
                 res_scale: float = 1.0):
        super().__init__()
        _check_scale(scale)
        positive_int(n_blocks, "n_blocks")
        positive_int(features, "features")
        self.head = nn.Conv2d(positive_int(channels, "channels"), features, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(features, res_scale) for _ in range(n_blocks)],
                                  nn.Conv2d(features, features, 3, padding=1))
        self.tail = nn.Sequential(pixel_shuffle_upsampler(features, scale), nn.Conv2d(features, channels, 3, padding=1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = self.head(y - 0.5)
        return self.tail(h + self.body(h)) + 0.5


class WDSRBlock(nn.Module):
    """Wide-activation residual block: "A" (3x3 expand, 3x3 reduce) or "B" (1x1 expand, 1x1 low-rank, 3x3)."""

    def __init__(self, features: int, expansion: int, kind: str, res_scale: float = 1.0):
        super().__init__()
        wide = features * expansion
        if kind == "A":
            body = [weight_norm(nn.Conv2d(features, wide, 3, padding=1)), nn.ReLU(),
                    weight_norm(nn.Conv2d(wide, features, 3, padding=1))]
        else:
            low = max(1, int(features * 0.8))
            body = [weight_norm(nn.Conv2d(features, wide, 1)), nn.ReLU(),
                    weight_norm(nn.Conv2d(wide, low, 1)),
                    weight_norm(nn.Conv2d(low, features, 3, padding=1))]
        self.body = nn.Sequential(*body)
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.body(x)


class WDSR(nn.Module):
    """WDSR (Yu et al. 2018) with weight normalisation: body of wide-activation blocks plus a
    5x5 skip branch, both ending in pixel shuffle.  (B, C, h, w) -> (B, C, scale h, scale w).

    Defaults (32 features, 8 blocks, expansion 4 for "A", 6 for "B"); parameters (1 channel, x2):
    A 594,004; B 150,756.
    """

    def __init__(self, channels: int = 1, scale: int = 2, n_blocks: int = 8, features: int = 32,
                 block: str = "A", expansion: int | None = None):
        super().__init__()
        _check_scale(scale)
        choice(block, "block", ("A", "B"))
        expansion = positive_int(expansion if expansion is not None else (4 if block == "A" else 6), "expansion")
        c = positive_int(channels, "channels")
        out = c * scale * scale
        self.head = weight_norm(nn.Conv2d(c, features, 3, padding=1))
        self.body = nn.Sequential(*[WDSRBlock(features, expansion, block) for _ in range(positive_int(n_blocks, "n_blocks"))])
        self.tail = nn.Sequential(weight_norm(nn.Conv2d(features, out, 3, padding=1)), nn.PixelShuffle(scale))
        self.skip = nn.Sequential(weight_norm(nn.Conv2d(c, out, 5, padding=2)), nn.PixelShuffle(scale))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = y - 0.5
        return self.tail(self.body(self.head(y))) + self.skip(y) + 0.5
