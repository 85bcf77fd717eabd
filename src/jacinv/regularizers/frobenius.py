"""Sum-over-batch squared Frobenius penalties sum_i ||J(y_i) A||_F^2 and sum_i ||J(y_i)||_F^2."""
from __future__ import annotations

import torch
from torch import nn

from .._checks import choice, positive_int
from ..operators import LinearOperator
from .norms import PROJECTIONS, frobenius_sq_estimates
from .products import JacobianProducts


class FrobeniusJacobianPenalty(nn.Module):
    """Unbiased random-projection estimates, one shared vjp per projection for all targets."""

    def __init__(self, targets: dict[str, LinearOperator | None], n_projections: int = 1,
                 projection: str = "gaussian", reduction: str = "sum", seed: int = 0):
        super().__init__()
        self.names = list(targets)
        self.operators = nn.ModuleList([op for op in targets.values() if op is not None])
        self._ops = list(targets.values())
        self.n_projections = positive_int(n_projections, "n_projections")
        self.projection = choice(projection, "projection", PROJECTIONS)
        self.reduction = choice(reduction, "reduction", ("sum", "mean"))
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, f, y: torch.Tensor, x=None, index=None):
        estimates = frobenius_sq_estimates(JacobianProducts(f, y), self._ops, self.n_projections,
                                           self.projection, self.generator)
        reduce = torch.sum if self.reduction == "sum" else torch.mean
        return ({n: reduce(e) for n, e in zip(self.names, estimates)},
                {n: e.detach() for n, e in zip(self.names, estimates)})

    def get_extra_state(self):
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state):
        self.generator.set_state(state["generator"])
