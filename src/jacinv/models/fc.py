"""The seed's fully connected reconstruction network."""
from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import as_shape, positive_int


class FCNet(nn.Module):
    """y (B, *y_shape) -> x (B, *out_shape): flatten, then ``n_layers`` linear layers of width
    ``width`` (default p = prod(out_shape)) with ReLU on all but the last.

    The seed's CS network is FCNet(q, (1, 28, 28)): 160 -> 784 -> 784 -> 784,
    1,357,104 parameters at q = 160.
    """

    def __init__(self, in_features: int, out_shape, width: int | None = None, n_layers: int = 3):
        super().__init__()
        self.out_shape = as_shape(out_shape, "out_shape")
        p = math.prod(self.out_shape)
        width = positive_int(p if width is None else width, "width")
        n_layers = positive_int(n_layers, "n_layers")
        sizes = [positive_int(in_features, "in_features")] + [width] * (n_layers - 1) + [p]
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if k < n_layers - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y.flatten(1)).reshape(y.shape[0], *self.out_shape)
