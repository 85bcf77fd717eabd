"""A training penalty: a weighted sum of named terms, with the seed's automatic weight (Algorithm 4)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import finite_number, positive_int
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


def check_index(index, batch: int) -> torch.Tensor:
    """``index`` as a (B,) integer tensor of dataset indices of the batch's samples, or raise naming it."""
    if isinstance(index, (list, tuple)):
        index = torch.as_tensor(index)
    if not isinstance(index, torch.Tensor) or index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise TypeError(f"index must be an integer tensor (B,) of dataset indices, got {index!r}")
    if tuple(index.shape) != (batch,):
        raise ValueError(f"index must have shape ({batch},), one dataset index per sample of y, got {tuple(index.shape)}")
    if batch and int(index.min()) < 0:
        raise ValueError(f"index must hold dataset indices >= 0, got {int(index.min())}")
    return index


class Regularizer(nn.Module):
    """``reg(f, y, x, index=None, loss=None)`` -> scalar penalty to add to the fidelity loss.

    Args:
        name: the regulariser's name (e.g. "sja+sj").
        terms: modules returning ({term: differentiable scalar}, {stat: tensor}).
        weights: {term: float or "auto"}; "auto" needs ``loss`` (the minibatch fidelity).
        kappa: the divisor of Algorithm 4.
        every: lazy regularisation: in train mode the penalty is evaluated on every ``every``-th call
            only, with its weights multiplied by ``every`` (the same penalty on average); the other
            calls return a zero penalty without touching the network.  Eval mode always evaluates.

    After an evaluated call, ``last_stats`` holds per-sample estimates (B,) per term, the
    penalty values and the weights used ("lambda_<term>", including the factor ``every``); spectral
    terms add "argmax_<term>", the row of the batch whose value entered the penalty.
    """

    def __init__(self, name: str, terms: list[nn.Module], weights: dict[str, float | str], kappa: float = 20.0,
                 every: int = 1):
        super().__init__()
        self.every = positive_int(every, "every")
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # train-mode calls so far
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
        if index is not None:
            index = check_index(index, y.shape[0])
        scale = 1
        if self.training and self.terms:
            due = int(self.calls) % self.every == 0
            self.calls += 1
            if not due:
                return y.new_zeros(())
            scale = self.every
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
                stats[f"lambda_{name}"] = float(weight) * scale
                total = total + weight * scale * value
        self.last_stats = stats
        return total

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "calls", self.calls.clone())  # states saved before `every` existed
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
