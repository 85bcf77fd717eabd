"""A training penalty: a weighted sum of named terms, with the seed's automatic weight (Algorithm 4)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import finite_number
from .products import refuse_batch_coupling

AUTO = "auto"


def auto_weight(loss: float, penalty: float, kappa: float = 20.0) -> float:
    """Seed Algorithm 4: lambda = 10^alpha / kappa with alpha = floor(log10(loss / penalty)); 0 if penalty is 0,
    NaN if either is not finite (so the caller's finiteness check stops the run)."""
    if not (math.isfinite(loss) and math.isfinite(penalty)):
        return math.nan
    if penalty <= 0.0 or loss <= 0.0:
        return 0.0
    return 10.0 ** math.floor(math.log10(loss / penalty)) / kappa


class Regularizer(nn.Module):
    """``reg(f, y, x, index=None, loss=None)`` -> scalar penalty to add to the fidelity loss.

    Args:
        name: the regulariser's name (e.g. "sja+sj").
        terms: modules returning ({term: differentiable scalar}, {stat: tensor}).
        weights: {term: float or "auto"}; "auto" needs ``loss`` (the minibatch fidelity).
        kappa: the divisor of Algorithm 4.

    After a call, ``last_stats`` holds per-sample estimates (B,) per term, the
    penalty values and the weights used ("lambda_<term>").
    """

    def __init__(self, name: str, terms: list[nn.Module], weights: dict[str, float | str], kappa: float = 20.0):
        super().__init__()
        self.name = name
        self.terms = nn.ModuleList(terms)
        for term, w in weights.items():
            if w != AUTO:
                finite_number(w, f"lambda for {term!r}", low=0.0)
        self.weights = dict(weights)
        self.kappa = finite_number(kappa, "kappa", low=0.0, low_open=True)
        self.last_stats: dict = {}

    def forward(self, f, y: torch.Tensor, x: torch.Tensor | None = None, index: torch.Tensor | None = None,
                loss: torch.Tensor | float | None = None) -> torch.Tensor:
        refuse_batch_coupling(f)
        total = y.new_zeros(())
        stats: dict = {}
        for term in self.terms:
            values, term_stats = term(f, y, x, index=index)
            stats.update(term_stats)
            for name, value in values.items():
                weight = self.weights[name]
                if weight == AUTO:
                    if loss is None:
                        raise ValueError(f"lambda for {name!r} is 'auto', which needs loss= (the minibatch fidelity loss)")
                    weight = auto_weight(float(torch.as_tensor(loss).detach()), float(value.detach()), self.kappa)
                stats[f"penalty_{name}"] = float(value.detach())
                stats[f"lambda_{name}"] = float(weight)
                total = total + weight * value
        self.last_stats = stats
        return total
