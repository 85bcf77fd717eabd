"""A training penalty: a weighted sum of named terms, with the seed's automatic weight (Algorithm 4)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import choice, finite_number, positive_int
from .products import refuse_batch_coupling

AUTO = "auto"
LAZY_MODES = ("scale", "hold")


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
        every: lazy regularisation: in train mode the penalty is evaluated on every ``every``-th call
            only; the other calls do not touch the network.  Eval mode always evaluates.
        lazy: what the calls in between contribute.  "scale": nothing (a zero penalty), and the
            evaluated calls' weights are multiplied by ``every`` (the same penalty on average; the
            optimiser sees a spike every ``every`` steps).  "hold": the evaluated call's parameter
            gradient again, held (a surrogate scalar whose value is the last penalty and whose
            gradient is the held one), at weight x 1, so that an adaptive optimiser (Adam) sees a
            penalty gradient on every step, as with every = 1.  Holding costs one copy of f's
            parameter gradients.

    After an evaluated call, ``last_stats`` holds per-sample estimates (B,) per term, the
    penalty values and the weights used ("lambda_<term>", including the factor ``every``).
    """

    def __init__(self, name: str, terms: list[nn.Module], weights: dict[str, float | str], kappa: float = 20.0,
                 every: int = 1, lazy: str = "scale"):
        super().__init__()
        self.every = positive_int(every, "every")
        self.lazy = choice(lazy, "lazy", LAZY_MODES)
        self.held: list[torch.Tensor | None] | None = None  # "hold": the last evaluated penalty's parameter gradient
        self.held_value = 0.0
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
        scale, hold = 1, False
        if self.training and self.terms:
            due = int(self.calls) % self.every == 0
            self.calls += 1
            hold = self.every > 1 and self.lazy == "hold"
            if not due:
                return self._held_surrogate(f, y) if hold else y.new_zeros(())
            scale = 1 if hold else self.every
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
        if hold:
            params = self._parameters_of(f)
            grads = torch.autograd.grad(total, params, allow_unused=True) if total.requires_grad else [None] * len(params)
            self.held, self.held_value = [None if g is None else g.detach() for g in grads], float(total.detach())
            return self._held_surrogate(f, y)
        return total

    @staticmethod
    def _parameters_of(f) -> list[nn.Parameter]:
        if not isinstance(f, nn.Module):
            raise TypeError(f"lazy='hold' holds the penalty's parameter gradient, so f must be an nn.Module, "
                            f"got {type(f).__name__}")
        return [p for p in f.parameters() if p.requires_grad]

    def _held_surrogate(self, f, y: torch.Tensor) -> torch.Tensor:
        """A scalar whose value is the last evaluated penalty and whose gradient with respect to f's
        parameters is that penalty's gradient, held (zero before any evaluation)."""
        params = self._parameters_of(f)
        if self.held is None:
            return y.new_zeros(())
        if len(self.held) != len(params):
            raise ValueError(f"the held penalty gradient has {len(self.held)} parameter tensors, f has {len(params)}; "
                             "call the regulariser with the model it was evaluated on")
        inner = sum(((p * g).sum() for p, g in zip(params, self.held) if g is not None), y.new_zeros(()))
        return inner - inner.detach() + self.held_value

    def get_extra_state(self):
        return {"held": self.held, "held_value": self.held_value}

    def set_extra_state(self, state):
        self.held, self.held_value = state["held"], state["held_value"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "calls", self.calls.clone())  # states saved before `every` existed
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())  # ... and before lazy="hold"
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
