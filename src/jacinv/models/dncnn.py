"""DnCNN (Zhang et al. 2017) with residual learning and a per-sample-safe normalisation option."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import choice, positive_int

NORMS = ("none", "batch", "group", "instance")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A normalisation layer; "batch" couples the samples of a batch in train mode, the others do not."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class DnCNN(nn.Module):
    """x_hat = y - r(y): ``depth`` 3x3 conv layers of ``features`` channels, ReLU between them.

    ``norm`` "batch" is the original DnCNN; it makes per-sample Jacobians undefined in
    train mode, so the Jacobian regularisers refuse it — use "group" (or "instance"),
    which normalise each sample on its own, or "none" (the default, as in seed 000's
    3- and 5-layer nets).  Parameters: depth 5 / 64 features, 1 channel: 112,001;
    depth 17: 555,137 (+ norm parameters).
    """

    def __init__(self, channels: int = 1, depth: int = 17, features: int = 64, norm: str = "none",
                 residual: bool = True):
        super().__init__()
        positive_int(depth, "depth", minimum=2)
        positive_int(features, "features")
        choice(norm, "norm", NORMS)
        layers: list[nn.Module] = [nn.Conv2d(positive_int(channels, "channels"), features, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=norm == "none"),
                       norm_layer(norm, features), nn.ReLU()]
        layers.append(nn.Conv2d(features, channels, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.residual = residual

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        r = self.net(y)
        return y - r if self.residual else r
