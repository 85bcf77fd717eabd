"""A training penalty: a weighted sum of named terms, with the seed's automatic weight (Algorithm 4)."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .._checks import finite_number, positive_int
from .products import refuse_batch_coupling

AUTO = "auto"
TARGET_STEP = 1.1     # a target's multiplier: x this after an evaluated step above its aim, / this (down to 1) below it
TARGET_MARGIN = 0.05  # a target L is aimed at L (1 - this): room for the estimates' error and the step-to-step jitter


def auto_weight(loss: float, penalty: float, kappa: float = 20.0) -> float:
    """Seed Algorithm 4: lambda = 10^alpha / kappa with alpha = floor(log10(loss / penalty)); 0 if penalty is 0,
    NaN if either is not finite (so the caller's finiteness check stops the run).  ``auto_weights`` on floats."""
    return float(auto_weights(torch.tensor(float(loss)), torch.tensor(float(penalty)), kappa))


def auto_weights(loss: torch.Tensor, penalty: torch.Tensor, kappa: float = 20.0) -> torch.Tensor:
    """``auto_weight`` on tensors, where they are (nothing is read back to the host): a 0-d float64 tensor.
    The formula's one home."""
    loss, penalty = torch.as_tensor(loss).detach().double(), penalty.detach().double().to(loss.device)
    weight = 10.0 ** torch.floor(torch.log10(loss / penalty)) / kappa
    weight = torch.where((penalty > 0) & (loss > 0), weight, torch.zeros_like(weight))
    return torch.where(torch.isfinite(loss) & torch.isfinite(penalty), weight, torch.full_like(weight, math.nan))


def check_index(index, batch: int) -> np.ndarray:
    """``index`` as a (B,) int64 array on the host of dataset indices of the batch's samples, or raise naming it."""
    if isinstance(index, torch.Tensor) and not (index.is_floating_point() or index.is_complex()
                                                or index.dtype == torch.bool):
        index = index.detach().cpu().numpy()
    elif isinstance(index, (list, tuple)):
        index = np.asarray(index)
    if not isinstance(index, np.ndarray) or index.dtype.kind not in "iu":
        raise TypeError(f"index must be an integer tensor (B,) of dataset indices, got {index!r}")
    if tuple(index.shape) != (batch,):
        raise ValueError(f"index must have shape ({batch},), one dataset index per sample of y, got {tuple(index.shape)}")
    if batch and int(index.min()) < 0:
        raise ValueError(f"index must hold dataset indices >= 0, got {int(index.min())}")
    return index.astype(np.int64)


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
        targets: {term: L > 0}: that term asks for value <= L instead of a small value: its penalty is
            weight * m * max(0, value - L (1 - TARGET_MARGIN)) (a hinge: no gradient while the aim holds), with a
            multiplier m (from 1) multiplied by TARGET_STEP after each evaluated training call whose value exceeded
            the aim and divided by it (not below 1) after one that met it, so the push grows until it holds.  The
            margin absorbs the power iterations' underestimate and the jitter of stochastic steps, so that the
            trained net meets L itself.

    After an evaluated call, ``last_stats`` holds per-sample estimates (B,) per term, the
    penalty values and the weights used ("lambda_<term>", including the factor ``every``); spectral
    terms add "argmax_<term>", the row of the batch whose value entered the penalty.  They are detached
    tensors where the step computed them (read them with ``float``: nothing in a step waits for the device).
    """

    def __init__(self, name: str, terms: list[nn.Module], weights: dict[str, float | str], kappa: float = 20.0,
                 every: int = 1, targets: dict[str, float] | None = None):
        super().__init__()
        self.every = positive_int(every, "every")
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # train-mode calls so far (saved)
        self._calls = 0                                                      # the same on the host
        self.name = name
        self.terms = nn.ModuleList(terms)
        for term, w in weights.items():
            if w != AUTO:
                finite_number(w, f"lambda for {term!r}", low=0.0)
        self.weights = dict(weights)
        self.kappa = finite_number(kappa, "kappa", low=0.0, low_open=True)
        self.targets = dict(targets or {})
        for term, bound in self.targets.items():
            if term not in self.weights:
                raise ValueError(f"target for {term!r}: the regulariser {name!r} has no such term; expected one of "
                                 f"{sorted(self.weights)}")
            finite_number(bound, f"target for {term!r}", low=0.0, low_open=True)
            self.register_buffer(f"multiplier_{term}", torch.ones((), dtype=torch.float64))
        self.last_stats: dict = {}

    def forward(self, f, y: torch.Tensor, x: torch.Tensor | None = None, index=None,
                loss: torch.Tensor | float | None = None) -> torch.Tensor:
        refuse_batch_coupling(f)
        if index is not None:
            index = check_index(index, y.shape[0])
        scale = 1
        if self.training and self.terms:
            due = self._calls % self.every == 0
            self._calls += 1
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
                    weight = auto_weights(torch.as_tensor(loss, device=value.device), value, self.kappa).to(value.dtype)
                stats[f"penalty_{name}"] = value.detach()
                stats[f"lambda_{name}"] = weight * scale
                if name in self.targets:
                    value = self._hinge(name, value)
                    stats[f"multiplier_{name}"] = getattr(self, f"multiplier_{name}").clone()
                total = total + weight * scale * value
        self.last_stats = stats
        return total

    def _hinge(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """multiplier * max(0, value - aim) of the term ``name`` (aim: its target less TARGET_MARGIN); in train mode
        the multiplier then moves (up after a value above the aim, down to 1 after one below)."""
        bound = self.targets[name] * (1.0 - TARGET_MARGIN)
        multiplier = getattr(self, f"multiplier_{name}")
        hinge = multiplier.to(value.dtype, copy=True) * torch.clamp(value - bound, min=0.0)
        if self.training:
            above = value.detach() > bound
            multiplier.copy_(torch.where(above, multiplier * TARGET_STEP, torch.clamp(multiplier / TARGET_STEP, min=1.0)))
        return hinge

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "calls", self.calls.clone())  # states saved before `every` existed
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._calls = int(self.calls)
