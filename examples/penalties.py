"""A plug-in regulariser (docs/plugins.md): the mean output energy mean_i ||f(y_i)||^2, scaled.

    python train.py plugins=[examples/penalties.py] regularizer.name=output_energy regularizer.weight=0.01
"""
import torch

from jacinv.regularizers import register_regularizer


class OutputEnergy(torch.nn.Module):
    """mean_i ||f(y_i)||^2 times ``scale``: one term, "energy"."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, f, y, x=None, index=None):
        return {"energy": self.scale * f(y).pow(2).flatten(1).sum(1).mean()}, {}


register_regularizer("output_energy", lambda operator, scale=1.0: [OutputEnergy(scale)],
                     weights={"energy": "weight"})
