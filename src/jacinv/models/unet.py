"""fastMRI-style U-Net (Ronneberger et al. 2015; Zbontar et al. 2018) with instance normalisation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import positive_int


def conv_block(cin: int, cout: int, drop_prob: float) -> nn.Sequential:
    layers = []
    for a in (cin, cout):
        layers += [nn.Conv2d(a, cout, 3, padding=1, bias=False), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.2),
                   nn.Dropout2d(drop_prob)]
    return nn.Sequential(*layers)


def up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False), nn.InstanceNorm2d(cout),
                         nn.LeakyReLU(0.2))


class UNet(nn.Module):
    """(B, in_chans, H, W) -> (B, out_chans, H, W); any H, W (odd sizes are padded on the way up).

    ``chans`` channels at the top, doubled at each of ``num_pool_layers`` poolings.
    Parameters: chans 32, 4 pools, 1 -> 1 channels: 7,756,097; chans 16: 1,939,105.
    Instance norm keeps samples independent, as the Jacobian regularisers need.
    """

    def __init__(self, in_chans: int = 1, out_chans: int = 1, chans: int = 32, num_pool_layers: int = 4,
                 drop_prob: float = 0.0):
        super().__init__()
        positive_int(chans, "chans")
        positive_int(num_pool_layers, "num_pool_layers")
        self.down = nn.ModuleList([conv_block(positive_int(in_chans, "in_chans"), chans, drop_prob)])
        ch = chans
        for _ in range(num_pool_layers - 1):
            self.down.append(conv_block(ch, ch * 2, drop_prob))
            ch *= 2
        self.bottom = conv_block(ch, ch * 2, drop_prob)
        self.up_conv, self.up = nn.ModuleList(), nn.ModuleList()
        for _ in range(num_pool_layers - 1):
            self.up_conv.append(up_block(ch * 2, ch))
            self.up.append(conv_block(ch * 2, ch, drop_prob))
            ch //= 2
        self.up_conv.append(up_block(ch * 2, ch))
        self.up.append(nn.Sequential(conv_block(ch * 2, ch, drop_prob),
                                     nn.Conv2d(ch, positive_int(out_chans, "out_chans"), 1)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        stack, out = [], image
        for layer in self.down:
            out = layer(out)
            stack.append(out)
            out = F.avg_pool2d(out, 2)
        out = self.bottom(out)
        for up_conv, conv in zip(self.up_conv, self.up):
            skip = stack.pop()
            out = up_conv(out)
            pad = [0, skip.shape[-1] - out.shape[-1], 0, skip.shape[-2] - out.shape[-2]]
            if any(pad):
                out = F.pad(out, pad, mode="reflect")
            out = conv(torch.cat([out, skip], dim=1))
        return out
