"""Batch-max spectral penalties max_i ||J(y_i) A||_2 and max_i ||J(y_i)||_2, fast.

Only the batch maximum receives gradient, so a step needs
  1. estimates good enough to find the arg-max: detached power iterations, warm-started
     from each sample's vector of its previous visit (kept in a ``VectorBank`` keyed by
     dataset index), and run only on the likely maxima — the top ``candidates`` by their
     previous estimate plus the ``refresh`` samples stalest in the bank (a round-robin that
     keeps every estimate honest) and every sample not seen before;
  2. one differentiable evaluation ||J A v|| on the arg-max sample alone.
Without ``index`` there is no bank: every sample gets ``cold_iters`` iterations.
"""
from __future__ import annotations

import torch
from torch import nn

from .._checks import positive_int
from ..operators import Identity, LinearOperator
from .bank import VectorBank
from .norms import per_sample_norm, power_iteration, random_unit_vectors
from .products import JacobianProducts


class SpectralJacobianPenalty(nn.Module):
    """Per-term batch-max spectral norms of J A for each named target operator.

    Args:
        targets: {"sja": A, "sj": None, ...}; an Identity target shares the work of None.
        iters: power iterations per step on warm-started samples.
        cold_iters: iterations for samples without a stored vector.
        candidates: samples refreshed per step by their previous estimate (the likely maxima).
        refresh: further samples refreshed per step, stalest first.
        store_dtype, store_device: how the per-sample vectors are kept.
    """

    def __init__(self, targets: dict[str, LinearOperator | None], iters: int = 1, cold_iters: int = 3,
                 candidates: int = 4, refresh: int = 1, store_dtype: torch.dtype = torch.float16,
                 store_device="cpu", seed: int = 0):
        super().__init__()
        if not targets:
            raise ValueError("targets must name at least one operator (or None for J itself)")
        self.iters = positive_int(iters, "iters")
        self.cold_iters = positive_int(cold_iters, "cold_iters")
        self.candidates = positive_int(candidates, "candidates")
        self.refresh = positive_int(refresh, "refresh", minimum=0)
        # Identity targets are J itself: map every name to a shared key.
        self.keys = {name: ("J" if op is None or isinstance(op, Identity) else name) for name, op in targets.items()}
        self.operators = nn.ModuleDict({k: op for k, op in ((self.keys[n], o) for n, o in targets.items())
                                        if op is not None and k != "J"})
        self.store_dtype, self.store_device = store_dtype, store_device
        self.banks: dict[str, VectorBank] = {}
        self.generator = torch.Generator().manual_seed(seed)

    def _operator(self, key: str) -> LinearOperator | None:
        return self.operators[key] if key in self.operators else None

    def _refresh_mask(self, values: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        """Samples to refresh this step: unseen, top ``candidates`` by estimate, ``refresh`` stalest."""
        unseen = torch.isnan(values)
        chosen = unseen.clone()
        seen = (~unseen).nonzero().flatten()
        if seen.numel():
            top = seen[values[seen].topk(min(self.candidates, seen.numel())).indices]
            chosen[top] = True
            rest = (~chosen).nonzero().flatten()
            if rest.numel() and self.refresh:
                chosen[rest[age[rest].topk(min(self.refresh, rest.numel())).indices]] = True
        return chosen

    def forward(self, f, y: torch.Tensor, x=None, index: torch.Tensor | None = None):
        """Returns ({name: differentiable scalar batch max}, {name: (B,) detached estimates})."""
        b = y.shape[0]
        keys = sorted(set(self.keys.values()))
        lookups = {}
        if index is None:
            chosen = torch.ones(b, dtype=torch.bool)
        else:
            index = index.detach().cpu().long()
            chosen = torch.zeros(b, dtype=torch.bool)
            for key in keys:
                bank = self.banks.setdefault(key, VectorBank(self._input_shape(key, y), self.store_dtype,
                                                             self.store_device))
                lookups[key] = bank.lookup(index)
                chosen |= self._refresh_mask(lookups[key][0].cpu(), lookups[key][2].cpu())
        sel = chosen.nonzero().flatten().to(y.device)
        products = JacobianProducts(f, y[sel])

        maxima, estimates, argmax_vectors = {}, {}, {}
        for key in keys:
            op = self._operator(key)
            shape = (sel.numel(), *products.input_shape(op))
            v0 = random_unit_vectors(shape, y, self.generator)
            n_iter = self.cold_iters
            if key in lookups:
                cached_values, cached_vectors, _ = lookups[key]
                warm = ~torch.isnan(cached_values[chosen.to(cached_values.device)])
                v0[warm.to(v0.device)] = cached_vectors[chosen.to(cached_vectors.device)][warm].to(v0)
                n_iter = self.iters if bool(warm.all()) else self.cold_iters
            v, sigma = power_iteration(products, op, v0, n_iter)
            full = (lookups[key][0].to(y.device, y.dtype).clone() if key in lookups
                    else torch.zeros(b, dtype=y.dtype, device=y.device))
            full[sel] = sigma.detach()
            best = int(sigma.argmax())
            argmax_vectors[key] = (int(sel[best]), v[best: best + 1])
            estimates[key] = full
            if key in lookups and self.training:
                self.banks[key].store(index, chosen, sigma, v)
        # differentiable evaluation on each arg-max sample (shared when they coincide)
        per_sample = {}
        for key, (i, v) in argmax_vectors.items():
            if i not in per_sample:
                per_sample[i] = JacobianProducts(f, y[i: i + 1])
            maxima[key] = per_sample[i].jvp(v, self._operator(key), create_graph=True).flatten().norm()
            estimates[key][i] = maxima[key].detach()
        return ({n: maxima[k] for n, k in self.keys.items()}, {n: estimates[k] for n, k in self.keys.items()})

    def _input_shape(self, key: str, y: torch.Tensor) -> tuple[int, ...]:
        op = self._operator(key)
        return op.in_shape if op is not None else tuple(y.shape[1:])

    def get_extra_state(self):
        return {"banks": {k: bank.state() for k, bank in self.banks.items()},
                "generator": self.generator.get_state()}

    def set_extra_state(self, state):
        self.generator.set_state(state["generator"])
        for key, bank_state in state["banks"].items():
            bank = VectorBank(tuple(bank_state["vectors"].shape[1:]), self.store_dtype, self.store_device)
            bank.load(bank_state)
            self.banks[key] = bank
